//! The view family: shape ops, copies, casts and device moves. Reshape (of
//! contiguous data), permute/transpose, narrow, squeeze, unsqueeze and
//! [`broadcast_as`](Tensor::broadcast_as) (PyTorch's `expand`) are views: they build
//! a new [`Layout`] over the same storage. `contiguous`, [`dense`], `cat` and
//! `stack` copy; `to_dtype` and `to_device` convert. They share a file because their
//! kernels do too: every one of them is a strided copy on the backend
//! (`copy_strided`, `cast`).

use crate::autograd::record;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result, ResultExt};
use crate::layout::Layout;
use crate::shape::{check_shape, normalize_axis};
use crate::tensor::{check_same_kind, Tensor};

impl Tensor {
    /// Same elements, new shape (PyTorch's `reshape`). A view when the layout is
    /// contiguous, else a copy. Every size is explicit; use [`Tensor::reshape_infer`]
    /// for a `-1` entry. A shape whose element count overflows `usize` is an error
    /// (see [`check_shape`]), never a wrapped count that happens to match.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if check_shape("reshape", shape)? != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
            });
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let out = match self.layout().reshape(shape) {
            Some(l) => self.view_of(l),
            None => {
                let dense = self.contiguous_storage()?;
                Tensor::from_storage(dense, Layout::contiguous(shape), self.device().clone())
            }
        };
        let in_shape = self.shape().to_vec();
        record(
            "reshape",
            out,
            &[self],
            Box::new(move |g| Ok(vec![Some(g.reshape(&in_shape)?)])),
        )
    }

    /// Reshape where one entry may be `-1` (inferred).
    pub fn reshape_infer(&self, shape: &[isize]) -> Result<Tensor> {
        let known = shape
            .iter()
            .filter(|&&d| d >= 0)
            .try_fold(1usize, |a, &d| a.checked_mul(d as usize));
        let holes = shape.iter().filter(|&&d| d < 0).count();
        let bad = match known {
            None => true,
            Some(known) => holes > 1 || (holes == 1 && (known == 0 || !self.numel().is_multiple_of(known))),
        };
        if bad {
            return Err(Error::invalid(
                "reshape_infer",
                format!("cannot reshape {:?} into {shape:?}", self.shape()),
            ));
        }
        let known = known.unwrap_or(1);
        let dims: Vec<usize> = shape
            .iter()
            .map(|&d| if d < 0 { self.numel() / known } else { d as usize })
            .collect();
        self.reshape(&dims).in_op("reshape_infer")
    }

    /// Flatten dims `start..=end` into one.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape(&[1]);
        }
        let s = normalize_axis("flatten", start, self.shape())?;
        let e = normalize_axis("flatten", end, self.shape())?;
        if s > e {
            return Err(Error::invalid("flatten", format!("start {start} is after end {end}")));
        }
        let mut dims = self.shape()[..s].to_vec();
        dims.push(self.shape()[s..=e].iter().product());
        dims.extend_from_slice(&self.shape()[e + 1..]);
        self.reshape(&dims).in_op("flatten")
    }

    /// Reorder dimensions (a view).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let out = self.view_of(self.layout().permute(perm)?);
        let mut inv = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        record(
            "permute",
            out,
            &[self],
            Box::new(move |g| Ok(vec![Some(g.permute(&inv)?)])),
        )
    }

    /// Swap two dimensions (a view).
    pub fn transpose(&self, d0: isize, d1: isize) -> Result<Tensor> {
        let a = normalize_axis("transpose", d0, self.shape())?;
        let b = normalize_axis("transpose", d1, self.shape())?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Transpose of the last two dimensions.
    pub fn t(&self) -> Result<Tensor> {
        self.transpose(-2, -1)
    }

    /// `len` entries of `dim` starting at `start` (a view). A range past the end is
    /// an error: [`Error::IndexOutOfRange`] with the end `start + len` as the index,
    /// or, when that end does not fit `i64`, an [`Error::InvalidArgument`] quoting
    /// `start` and `len` as passed (never a wrapped value).
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = normalize_axis("narrow", dim, self.shape())?;
        let size = self.shape()[d];
        let end = start.checked_add(len);
        if end.is_none_or(|end| end > size) {
            // the end as an index when it is one; else the numbers as passed (no wrap)
            return Err(match end.and_then(|e| i64::try_from(e).ok()) {
                Some(index) => Error::IndexOutOfRange {
                    op: "narrow",
                    index,
                    size,
                    shape: self.shape().to_vec(),
                },
                None => Error::invalid(
                    "narrow",
                    format!(
                        "start {start} with length {len} is out of range for dimension {dim} of size {size} (shape {:?})",
                        self.shape()
                    ),
                ),
            });
        }
        let out = self.view_of(self.layout().narrow(d, start, len));
        let in_shape = self.shape().to_vec();
        record(
            "narrow",
            out,
            &[self],
            Box::new(move |g| Ok(vec![Some(pad_narrowed(g, &in_shape, d, start)?)])),
        )
    }

    /// Insert a size-1 dimension at `dim` (`0..=rank`, negative allowed).
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let r = self.rank() as isize;
        let d = if dim < 0 { dim + r + 1 } else { dim };
        if d < 0 || d > r {
            return Err(Error::InvalidAxis {
                op: "unsqueeze",
                axis: dim,
                shape: self.shape().to_vec(),
            });
        }
        let d = d as usize;
        let out = self.view_of(self.layout().unsqueeze(d));
        record(
            "unsqueeze",
            out,
            &[self],
            Box::new(move |g| Ok(vec![Some(g.squeeze(d as isize)?)])),
        )
    }

    /// Remove the size-1 dimension `dim`.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = normalize_axis("squeeze", dim, self.shape())?;
        if self.shape()[d] != 1 {
            return Err(Error::invalid(
                "squeeze",
                format!(
                    "dimension {dim} of shape {:?} has size {}, not 1",
                    self.shape(),
                    self.shape()[d]
                ),
            ));
        }
        let out = self.view_of(self.layout().squeeze(d));
        record(
            "squeeze",
            out,
            &[self],
            Box::new(move |g| Ok(vec![Some(g.unsqueeze(d as isize)?)])),
        )
    }

    /// Broadcast to `shape` (a view with stride 0 on expanded dimensions).
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        check_shape("broadcast_as", shape)?;
        let l = self.layout().broadcast_to(shape).ok_or_else(|| Error::ShapeMismatch {
            op: "broadcast_as",
            lhs: self.shape().to_vec(),
            rhs: shape.to_vec(),
        })?;
        let out = self.view_of(l);
        let in_shape = self.shape().to_vec();
        record(
            "broadcast_as",
            out,
            &[self],
            Box::new(move |g| Ok(vec![Some(g.sum_to(&in_shape)?)])),
        )
    }

    /// Dense row-major copy, or `self` when already dense.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let out = Tensor::from_storage(
            self.contiguous_storage()?,
            Layout::contiguous(self.shape()),
            self.device().clone(),
        );
        record("contiguous", out, &[self], Box::new(|g| Ok(vec![Some(g.clone())])))
    }

    /// Concatenate along `dim`; all other dims must agree.
    pub fn cat(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        Tensor::cat_as("cat", tensors, dim)
    }

    /// [`Tensor::cat`] reporting errors as `op` (`stack` goes through it too).
    fn cat_as(op: &'static str, tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid(op, "no tensors given"))?;
        let d = normalize_axis(op, dim, first.shape())?;
        let mut shape = first.shape().to_vec();
        shape[d] = 0;
        for t in tensors {
            check_same_kind(op, first, t)?;
            let ok = t.rank() == first.rank()
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(i, (a, b))| i == d || a == b);
            if !ok {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: first.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                });
            }
            shape[d] = shape[d].checked_add(t.shape()[d]).ok_or_else(|| {
                Error::invalid(
                    op,
                    format!(
                        "the sizes of dimension {d} add up to more than usize holds (one part has shape {:?})",
                        t.shape()
                    ),
                )
            })?;
        }
        check_shape(op, &shape)?;
        let mut starts = Vec::with_capacity(tensors.len());
        let mut at = 0;
        for t in tensors {
            starts.push((at, t.shape()[d]));
            at += t.shape()[d];
        }
        let parts: Vec<(&Tensor, usize)> = tensors.iter().zip(&starts).map(|(t, &(s, _))| (*t, s)).collect();
        let out = assemble(first, &shape, d, &parts)?;
        record(
            "cat",
            out,
            tensors,
            Box::new(move |g| {
                starts
                    .iter()
                    .map(|&(s, l)| Ok(Some(g.narrow(d as isize, s, l)?.contiguous()?)))
                    .collect()
            }),
        )
    }

    /// Stack equally shaped tensors along a new dimension `dim`.
    pub fn stack(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::invalid("stack", "no tensors given"))?;
        for t in tensors {
            if t.shape() != first.shape() {
                return Err(Error::ShapeMismatch {
                    op: "stack",
                    lhs: first.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                });
            }
        }
        // the new axis may be one past the last: validate against the output rank
        let d = normalize_axis("stack", dim, &vec![1; first.rank() + 1])? as isize;
        let parts: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(d)).collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = parts.iter().collect();
        Tensor::cat_as("stack", &refs, d)
    }

    /// Convert to another float dtype (gradient converts back).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let s = self.storage();
        let out = self.device().backend().cast(&*s, self.layout(), dtype)?;
        let out = Tensor::from_storage(out, Layout::contiguous(self.shape()), self.device().clone());
        if !(dtype.is_float() && self.dtype().is_float()) {
            return Ok(out);
        }
        let from = self.dtype();
        record(
            "to_dtype",
            out,
            &[self],
            Box::new(move |g| Ok(vec![Some(g.to_dtype(from)?)])),
        )
    }

    /// Copy to another device through the host (gradient moves back).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if device.same(self.device()) {
            return Ok(self.clone());
        }
        let host = self.to_host()?;
        let out = Tensor::from_host(host, self.shape(), device)?;
        let from = self.device().clone();
        record(
            "to_device",
            out,
            &[self],
            Box::new(move |g| Ok(vec![Some(g.to_device(&from)?)])),
        )
    }
}

/// `t` itself when its storage is exactly its dense elements (row-major, offset 0,
/// nothing else in the buffer), else a dense copy: what kernels that take bare storage
/// need. Differentiable like [`Tensor::contiguous`]. Callers that keep an input for a
/// backward pass keep this result, so a strided input is copied once, not per
/// direction.
pub fn dense(t: &Tensor) -> Result<Tensor> {
    if t.is_contiguous() && t.layout().offset() == 0 && t.storage().len() == t.numel() {
        Ok(t.clone())
    } else {
        // `contiguous` alone keeps a dense view with an offset; force a fresh copy
        let c = t.contiguous()?;
        if c.layout().offset() == 0 && c.storage().len() == c.numel() {
            Ok(c)
        } else {
            c.affine(1.0, 0.0)
        }
    }
}

/// `narrow`'s backward: `g` written at `start` along `dim` of zeros of `shape`, as a
/// recorded op (its own backward narrows again), so `narrow` is differentiable to any
/// order.
fn pad_narrowed(g: &Tensor, shape: &[usize], dim: usize, start: usize) -> Result<Tensor> {
    let out = assemble(g, shape, dim, &[(g, start)])?;
    let len = g.shape()[dim];
    record(
        "narrow_backward",
        out,
        &[g],
        Box::new(move |gg| Ok(vec![Some(gg.narrow(dim as isize, start, len)?)])),
    )
}

/// A fresh dense tensor of `shape` that is zero except for `parts`, each written at
/// its start offset along `dim` (raw, unrecorded). Used by `cat` and `narrow`'s backward.
pub(crate) fn assemble(like: &Tensor, shape: &[usize], dim: usize, parts: &[(&Tensor, usize)]) -> Result<Tensor> {
    let b = like.device().backend();
    // parts that tile `dim` completely (cat, stack) overwrite every element: skip the
    // zero fill then (narrow's backward leaves gaps and needs it)
    let mut spans: Vec<(usize, usize)> = parts.iter().map(|(t, s)| (*s, t.shape()[dim])).collect();
    spans.sort_unstable();
    let covered = spans.iter().try_fold(0, |at, &(s, n)| (s == at).then_some(at + n)) == Some(shape[dim]);
    let n = crate::shape::numel(shape);
    let mut storage = if covered {
        b.empty(n, like.dtype())?
    } else {
        b.zeros(n, like.dtype())?
    };
    let whole = Layout::contiguous(shape);
    for (src, start) in parts {
        let target = whole.narrow(dim, *start, src.shape()[dim]);
        let ss = src.storage();
        b.copy_strided(&*ss, src.layout(), &mut *storage, &target)?;
    }
    Ok(Tensor::from_storage(storage, whole, like.device().clone()))
}
