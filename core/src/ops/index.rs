//! Indexing: `index_select` / `embedding` (backward: `index_add`) and
//! `gather` (backward: `scatter_add`). Indices are `i64` tensors on the same device;
//! out-of-range indices are an error from the backend, never a wild write.

use super::{check_float, check_index};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::shape::{check_shape, normalize_axis};
use crate::tensor::Tensor;

pub(crate) fn check_device(op: &'static str, a: &Tensor, ids: &Tensor) -> Result<()> {
    if !a.device().same(ids.device()) {
        return Err(Error::DeviceMismatch {
            op,
            lhs: a.device().name(),
            rhs: ids.device().name(),
        });
    }
    Ok(())
}

/// Errors of the `index_select` inside `embedding` are reported as `embedding`'s.
fn as_embedding(e: Error) -> Error {
    const OP: &str = "embedding";
    match e {
        Error::IndexOutOfRange { index, size, shape, .. } => Error::IndexOutOfRange {
            op: OP,
            index,
            size,
            shape,
        },
        Error::InvalidArgument { msg, .. } => Error::InvalidArgument { op: OP, msg },
        Error::UnsupportedDType { dtype, shape, .. } => Error::UnsupportedDType { op: OP, dtype, shape },
        Error::DeviceMismatch { lhs, rhs, .. } => Error::DeviceMismatch { op: OP, lhs, rhs },
        other => other,
    }
}

/// `index_select`'s backward: zeros of `shape` with the rows of `g` added at `ids`
/// along `dim`, as a recorded op (its own backward selects the rows again), so
/// `index_select` and `embedding` are differentiable to any order.
fn index_add_into_zeros(g: &Tensor, shape: &[usize], d: usize, ids: &Tensor) -> Result<Tensor> {
    let b = g.device().backend();
    let mut dst = b.zeros(crate::shape::numel(shape), g.dtype())?;
    let (sg, si) = (g.storage(), ids.storage());
    b.index_add(&mut *dst, shape, d, &*si, ids.layout(), &*sg, g.layout())?;
    let out = Tensor::from_storage(dst, Layout::contiguous(shape), g.device().clone());
    let ids = ids.clone();
    record(
        "index_select_backward",
        out,
        &[g],
        Box::new(move |gg| Ok(vec![Some(gg.index_select(d as isize, &ids)?)])),
    )
}

impl Tensor {
    /// Rows (entries of `dim`) picked by `ids` (i64, any shape, flattened). The
    /// output has `dim` replaced by the number of ids.
    pub fn index_select(&self, dim: isize, ids: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_select";
        check_float(OP, self)?;
        check_index(OP, ids)?;
        check_device(OP, self, ids)?;
        let d = normalize_axis(OP, dim, self.shape())?;
        let mut shape = self.shape().to_vec();
        shape[d] = ids.numel();
        check_shape(OP, &shape)?;
        let (s, si) = (self.storage(), ids.storage());
        let out = self
            .device()
            .backend()
            .index_select(&*s, self.layout(), &*si, ids.layout(), d)?;
        let out = Tensor::from_storage(out, Layout::contiguous(&shape), self.device().clone());
        let ids = ids.detach();
        let in_shape = self.shape().to_vec();
        record(
            OP,
            out,
            &[self],
            Box::new(move |g| Ok(vec![Some(index_add_into_zeros(g, &in_shape, d, &ids)?)])),
        )
    }

    /// Embedding lookup: `self` is the `[vocab, dim]` table, `ids` any shape of i64;
    /// the result has shape `ids.shape() + [dim]`.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::invalid(
                "embedding",
                format!("table must be [vocab, dim], got shape {:?}", self.shape()),
            ));
        }
        let mut shape = ids.shape().to_vec();
        shape.push(self.shape()[1]);
        check_shape("embedding", &shape)?;
        let flat = ids.reshape(&[ids.numel()])?;
        let rows = self.index_select(0, &flat).map_err(as_embedding)?;
        rows.reshape(&shape)
    }

    /// `out[i..] = self[i.. with dim replaced by ids[i..]]`; `ids` (i64) has the
    /// output's shape, equal to `self`'s except along `dim`.
    pub fn gather(&self, dim: isize, ids: &Tensor) -> Result<Tensor> {
        const OP: &str = "gather";
        check_float(OP, self)?;
        check_index(OP, ids)?;
        check_device(OP, self, ids)?;
        let d = normalize_axis(OP, dim, self.shape())?;
        let ok = ids.rank() == self.rank()
            && ids
                .shape()
                .iter()
                .zip(self.shape())
                .enumerate()
                .all(|(i, (a, b))| i == d || a == b);
        if !ok {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape().to_vec(),
                rhs: ids.shape().to_vec(),
            });
        }
        let (s, si) = (self.storage(), ids.storage());
        let out = self
            .device()
            .backend()
            .gather(&*s, self.layout(), &*si, ids.layout(), d)?;
        let out = Tensor::from_storage(out, Layout::contiguous(ids.shape()), self.device().clone());
        let ids = ids.detach();
        let in_shape = self.shape().to_vec();
        record(
            OP,
            out,
            &[self],
            Box::new(move |g| {
                let zeros = Tensor::zeros(&in_shape, g.dtype(), g.device())?;
                Ok(vec![Some(zeros.scatter_add(d as isize, &ids, g)?)])
            }),
        )
    }

    /// `self` plus `src` scattered into `dim` at `ids` (the adjoint of `gather`).
    /// Gradients: `self` gets `g`, `src` gets `g.gather(dim, ids)`.
    pub fn scatter_add(&self, dim: isize, ids: &Tensor, src: &Tensor) -> Result<Tensor> {
        const OP: &str = "scatter_add";
        check_float(OP, self)?;
        check_index(OP, ids)?;
        check_device(OP, self, ids)?;
        crate::tensor::check_same_kind(OP, self, src)?;
        let d = normalize_axis(OP, dim, self.shape())?;
        let ok = ids.shape() == src.shape()
            && ids.rank() == self.rank()
            && ids
                .shape()
                .iter()
                .zip(self.shape())
                .enumerate()
                .all(|(i, (a, b))| i == d || a == b);
        if !ok {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape().to_vec(),
                rhs: ids.shape().to_vec(),
            });
        }
        let b = self.device().backend();
        let mut dst = self.contiguous_storage()?;
        let (si, ss) = (ids.storage(), src.storage());
        b.scatter_add(&mut *dst, self.shape(), d, &*si, ids.layout(), &*ss, src.layout())?;
        let out = Tensor::from_storage(dst, Layout::contiguous(self.shape()), self.device().clone());
        let ids = ids.detach();
        record(
            OP,
            out,
            &[self, src],
            Box::new(move |g| Ok(vec![Some(g.clone()), Some(g.gather(d as isize, &ids)?)])),
        )
    }
}

// ----- issue 17 (helper "ops"): one_hot, masked_select ------------------------------

impl Tensor {
    /// One-hot encoding of i64 class ids: shape `self.shape() + [num_classes]`,
    /// i64 1/0 (as PyTorch gives). An id outside `0..num_classes` is an error. The
    /// ids are read on the host for that check.
    pub fn one_hot(&self, num_classes: usize) -> Result<Tensor> {
        const OP: &str = "one_hot";
        check_index(OP, self)?;
        let mut shape = self.shape().to_vec();
        shape.push(num_classes);
        check_shape(OP, &shape)?;
        if let Some(&bad) = self
            .to_vec::<i64>()?
            .iter()
            .find(|&&i| i < 0 || i as u64 >= num_classes as u64)
        {
            return Err(Error::IndexOutOfRange {
                op: OP,
                index: bad,
                size: num_classes,
                shape: vec![num_classes],
            });
        }
        let classes = Tensor::arange(num_classes, crate::dtype::DType::I64, self.device())?;
        self.unsqueeze(-1)?.eq(&classes).map_err(|e| e.in_op(OP))
    }

    /// The elements of `self` where `mask` (any dtype, non-zero selects; broadcast
    /// together with `self`) holds, in row-major order, as a 1-D tensor. The
    /// gradient is scattered back to the selected positions (the values are a
    /// recorded `gather`, so it is itself differentiable). The mask is read on the
    /// host, since the output's length depends on it.
    pub fn masked_select(&self, mask: &Tensor) -> Result<Tensor> {
        const OP: &str = "masked_select";
        check_float(OP, self)?;
        check_device(OP, self, mask)?;
        let shape = crate::shape::broadcast_shape(OP, self.shape(), mask.shape())?;
        let keep = mask.broadcast_as(&shape)?.to_vec_f64()?;
        let ids: Vec<i64> = keep
            .iter()
            .enumerate()
            .filter(|(_, &m)| m != 0.0)
            .map(|(i, _)| i as i64)
            .collect();
        let n = ids.len();
        let ids = Tensor::from_vec(ids, &[n], self.device())?;
        let flat = self.broadcast_as(&shape)?.reshape(&[crate::shape::numel(&shape)])?;
        flat.gather(0, &ids).map_err(|e| e.in_op(OP))
    }
}
