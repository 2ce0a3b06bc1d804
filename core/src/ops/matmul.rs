//! Matrix products. Batched with NumPy broadcasting of the batch dims; transposed
//! operands are passed to the backend as strides, so `a.matmul(&b.t()?)` makes no copy.

use super::check_float;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::shape::{broadcast_shape, check_shape};
use crate::tensor::{check_same_kind, Tensor};

impl Tensor {
    /// Matrix product of `[.., m, k]` and `[.., k, n]` (both rank ≥ 2, batch dims broadcast).
    ///
    /// Unlike PyTorch, operands of rank 0 or 1 are not promoted to matrices: they are
    /// an error (unsqueeze a vector to `[1, k]` or `[k, 1]` first).
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        const OP: &str = "matmul";
        check_same_kind(OP, self, rhs)?;
        check_float(OP, self)?;
        let (a, b) = (self.shape(), rhs.shape());
        if a.len() < 2 || b.len() < 2 {
            return Err(Error::invalid(
                OP,
                format!(
                    "operands of rank below 2 are unsupported (got shapes {a:?} and {b:?}, ranks {} and {}); \
                     unsqueeze a vector to a [1, k] or [k, 1] matrix",
                    a.len(),
                    b.len()
                ),
            ));
        }
        if a[a.len() - 1] != b[b.len() - 2] {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: a.to_vec(),
                rhs: b.to_vec(),
            });
        }
        let (m, k, n) = (a[a.len() - 2], a[a.len() - 1], b[b.len() - 1]);
        // `[.., m, k] · [k, n]` with a dense lhs is one `[(..·m), k] · [k, n]` GEMM:
        // one large product instead of a batch of small ones, and the weight
        // gradient becomes a single GEMM too instead of a batch plus a reduction.
        if b.len() == 2 && a.len() > 2 && self.is_contiguous() {
            let rows = self.numel() / k.max(1);
            if k > 0 {
                let mut out_shape = a[..a.len() - 1].to_vec();
                out_shape.push(n);
                return self.reshape(&[rows, k])?.matmul(rhs)?.reshape(&out_shape);
            }
        }
        let batch = broadcast_shape(OP, &a[..a.len() - 2], &b[..b.len() - 2])?;
        let mut sa = batch.to_vec();
        sa.extend([m, k]);
        let mut sb = batch.to_vec();
        sb.extend([k, n]);
        let mut so = batch.to_vec();
        so.extend([m, n]);
        for shape in [&sa, &sb, &so] {
            check_shape(OP, shape)?;
        }
        let la = self.layout().broadcast_to(&sa).expect("validated");
        let lb = rhs.layout().broadcast_to(&sb).expect("validated");
        let (st_a, st_b) = (self.storage(), rhs.storage());
        let out = self.device().backend().matmul(&*st_a, &la, &*st_b, &lb)?;
        let out = Tensor::from_storage(out, Layout::contiguous(&so), self.device().clone());
        // attached: a recorded backward (create_graph) differentiates through them
        let (x_in, y_in) = (self.clone(), rhs.clone());
        let (need_a, need_b) = (self.tracks_grad(), rhs.tracks_grad());
        record(
            OP,
            out,
            &[self, rhs],
            Box::new(move |g| {
                let (x, y) = if crate::autograd::is_grad_enabled() {
                    (x_in.clone(), y_in.clone())
                } else {
                    (x_in.detach(), y_in.detach())
                };
                let ga = if need_a {
                    Some(g.matmul(&y.transpose(-1, -2)?)?.sum_to(x.shape())?)
                } else {
                    None
                };
                let gb = if need_b {
                    Some(x.transpose(-1, -2)?.matmul(g)?.sum_to(y.shape())?)
                } else {
                    None
                };
                Ok(vec![ga, gb])
            }),
        )
    }
}
