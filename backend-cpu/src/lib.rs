//! # unigrad-cpu
//!
//! The CPU backend: GEMM through `matrixmultiply` (strided, so transposes are
//! free; rayon splits large and batched products over the cores), `rayon` for large
//! elementwise, reduction and row work (with a size threshold so small tensors stay
//! on the calling thread), inner loops compiled per SIMD level and picked at run
//! time (AVX-512 / AVX2 / baseline, see [`simd`]), and a buffer [`pool`] so a
//! training step reuses the previous step's memory instead of page-faulting fresh
//! allocations.
//!
//! Layout: `storage.rs` (the `Vec` per dtype, typed access for the kernels), `pool.rs` (buffer recycling),
//! `simd.rs` (run-time dispatch, libm-free `exp`/`log`/`tanh`), `strided.rs`
//! (iteration plans over strided layouts), `elem.rs` (the float trait, erf), and
//! `kernels/`, one file per op family matching `core/src/ops/`.
//!
//! Every `Backend` method below checks its operands before a kernel sees them: each
//! layout must lie inside its storage ([`Layout::check_fits`], O(rank)), operands of
//! one kernel must agree in shape, and the sizes of the fused kernels must fit their
//! storage. Core only builds layouts that pass, but the trait is public, and the GEMM
//! is unsafe code that trusts its strides; the other kernels would panic on a slice
//! index instead. So a bad call through the trait is an error, never an out-of-bounds
//! access or a panic.

#![warn(missing_docs)]

pub mod elem;
pub mod kernels;
pub mod pool;
pub mod simd;
pub mod storage;
pub mod strided;

use kernels::view::to_dense;
use std::sync::{Arc, OnceLock};
pub use storage::CpuStorage;
use storage::{check_alloc, mismatch, unsupported};
use unigrad_core::{
    AdamStep, Backend, BackendStorage, BinaryOp, BoxStorage, DType, Device, Error, HostData, Layout, ReduceOp, Result,
    UnaryOp,
};

/// The CPU backend. Use [`cpu`] to get a [`Device`] for it.
#[derive(Debug, Default)]
pub struct CpuBackend;

/// The CPU device (one shared instance).
pub fn cpu() -> Device {
    static DEV: OnceLock<Device> = OnceLock::new();
    DEV.get_or_init(|| Device::new(Arc::new(CpuBackend))).clone()
}

fn get(s: &dyn BackendStorage) -> Result<&CpuStorage> {
    s.as_any().downcast_ref::<CpuStorage>().ok_or_else(|| Error::Backend {
        device: "cpu".into(),
        msg: format!("storage of another device ({s:?}) passed to the CPU backend"),
    })
}

fn get_mut(s: &mut dyn BackendStorage) -> Result<&mut CpuStorage> {
    let dbg = format!("{:?}", s.dtype());
    s.as_any_mut()
        .downcast_mut::<CpuStorage>()
        .ok_or_else(|| Error::Backend {
            device: "cpu".into(),
            msg: format!("storage of another device ({dbg}) passed to the CPU backend"),
        })
}

/// `s` as CPU storage, with `l` checked to lie inside it: the one bounds check of
/// every method that hands a layout to a kernel.
fn view<'a>(op: &'static str, s: &'a dyn BackendStorage, l: &Layout) -> Result<&'a CpuStorage> {
    let c = get(s)?;
    l.check_fits(op, c.len())?;
    Ok(c)
}

/// [`view`] for the input of a kernel whose dense output has the layout's elements
/// in the input's dtype: also checks that memory can hold that output, since a
/// broadcast view may describe far more elements than it stores.
fn view_out<'a>(op: &'static str, s: &'a dyn BackendStorage, l: &Layout) -> Result<&'a CpuStorage> {
    let c = view(op, s, l)?;
    check_alloc(op, l.numel(), c.dtype())?;
    Ok(c)
}

/// [`view`] for a destination.
fn view_mut<'a>(op: &'static str, s: &'a mut dyn BackendStorage, l: &Layout) -> Result<&'a mut CpuStorage> {
    let c = get_mut(s)?;
    l.check_fits(op, c.len())?;
    Ok(c)
}

/// Error unless every layout has the shape of the first (operands of one
/// elementwise kernel, which walks them all over the first one's shape).
fn same_shapes(op: &'static str, layouts: &[&Layout]) -> Result<()> {
    let first = layouts[0].shape();
    match layouts.iter().find(|l| l.shape() != first) {
        Some(l) => Err(Error::ShapeMismatch {
            op,
            lhs: first.to_vec(),
            rhs: l.shape().to_vec(),
        }),
        None => Ok(()),
    }
}

/// Error unless `axes` are sorted, distinct axes of `shape` (what the reduce kernel assumes).
fn check_axes(op: &'static str, axes: &[usize], shape: &[usize]) -> Result<()> {
    let sorted = axes.windows(2).all(|w| w[0] < w[1]);
    if !sorted || axes.last().is_some_and(|&a| a >= shape.len()) {
        return Err(Error::invalid(
            op,
            format!("axes {axes:?} are not sorted, distinct axes of shape {shape:?}"),
        ));
    }
    Ok(())
}

/// Error unless dense `y` and `dy` each hold exactly the elements of `shape`.
fn check_dense_pair(op: &'static str, y: &CpuStorage, dy: &CpuStorage, shape: &[usize]) -> Result<()> {
    let n = Layout::contiguous(shape).reach();
    if n != Some(y.len()) || n != Some(dy.len()) {
        return Err(Error::invalid(
            op,
            format!(
                "shape {shape:?} needs dense operands of its size, got storage of {} and {} elements",
                y.len(),
                dy.len()
            ),
        ));
    }
    Ok(())
}

fn ids_of(s: &dyn BackendStorage, l: &Layout, op: &'static str) -> Result<Vec<i64>> {
    match view(op, s, l)? {
        CpuStorage::I64(v) => Ok(to_dense(v, l)),
        other => Err(Error::invalid(
            op,
            format!("indices must be i64, got {}", other.dtype()),
        )),
    }
}

/// Box one kernel output.
fn boxed(s: CpuStorage) -> Result<BoxStorage> {
    Ok(Box::new(s))
}

/// Box the three outputs of a fused kernel.
fn boxed3((a, b, c): (CpuStorage, CpuStorage, CpuStorage)) -> Result<(BoxStorage, BoxStorage, BoxStorage)> {
    Ok((Box::new(a), Box::new(b), Box::new(c)))
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        "cpu".into()
    }

    fn zeros(&self, len: usize, dtype: DType) -> Result<BoxStorage> {
        boxed(CpuStorage::try_zeros("zeros", len, dtype)?)
    }

    fn from_host(&self, data: &HostData) -> Result<BoxStorage> {
        boxed(CpuStorage::from_host(data.clone()))
    }

    fn to_host(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<HostData> {
        Ok(kernels::view::to_host(view_out("to_host", src, layout)?, layout))
    }

    fn copy_strided(
        &self,
        src: &dyn BackendStorage,
        sl: &Layout,
        dst: &mut dyn BackendStorage,
        dl: &Layout,
    ) -> Result<()> {
        const OP: &str = "copy_strided";
        kernels::view::copy_into(view(OP, src, sl)?, sl, view_mut(OP, dst, dl)?, dl)
    }

    fn cast(&self, src: &dyn BackendStorage, l: &Layout, dtype: DType) -> Result<BoxStorage> {
        // the cast goes through host vectors of the source dtype and then the target's
        let s = view_out("cast", src, l)?;
        check_alloc("cast", l.numel(), dtype)?;
        boxed(kernels::view::cast(s, l, dtype))
    }

    fn unary(&self, op: UnaryOp, src: &dyn BackendStorage, l: &Layout) -> Result<BoxStorage> {
        boxed(match view_out("unary", src, l)? {
            CpuStorage::F32(v) => CpuStorage::F32(kernels::elementwise::unary(op, v, l)),
            CpuStorage::F64(v) => CpuStorage::F64(kernels::elementwise::unary(op, v, l)),
            s => return Err(unsupported("unary", s, l.shape())),
        })
    }

    fn binary(
        &self,
        op: BinaryOp,
        a: &dyn BackendStorage,
        la: &Layout,
        b: &dyn BackendStorage,
        lb: &Layout,
    ) -> Result<BoxStorage> {
        same_shapes("binary", &[la, lb])?;
        boxed(match (view_out("binary", a, la)?, view("binary", b, lb)?) {
            (CpuStorage::F32(x), CpuStorage::F32(y)) => CpuStorage::F32(kernels::elementwise::binary(op, x, la, y, lb)),
            (CpuStorage::F64(x), CpuStorage::F64(y)) => CpuStorage::F64(kernels::elementwise::binary(op, x, la, y, lb)),
            (CpuStorage::I64(x), CpuStorage::I64(y)) => {
                CpuStorage::I64(kernels::elementwise::compare_i64(op, x, la, y, lb)?)
            }
            (x, y) => return Err(mismatch("binary", x, y)),
        })
    }

    fn where_cond(
        &self,
        c: &dyn BackendStorage,
        lc: &Layout,
        a: &dyn BackendStorage,
        la: &Layout,
        b: &dyn BackendStorage,
        lb: &Layout,
    ) -> Result<BoxStorage> {
        use kernels::elementwise::{where_any, where_cond};
        const OP: &str = "where_cond";
        same_shapes(OP, &[lc, la, lb])?;
        // the condition may have any dtype (non-zero selects `a`); `a` and `b` share one
        macro_rules! any_cond {
            ($x:expr, $y:expr, $wrap:path) => {
                match view(OP, c, lc)? {
                    CpuStorage::F32(c) => $wrap(where_any(c, lc, $x, la, $y, lb)),
                    CpuStorage::F64(c) => $wrap(where_any(c, lc, $x, la, $y, lb)),
                    CpuStorage::I64(c) => $wrap(where_any(c, lc, $x, la, $y, lb)),
                }
            };
        }
        boxed(match (view(OP, c, lc)?, view_out(OP, a, la)?, view(OP, b, lb)?) {
            (CpuStorage::F32(c), CpuStorage::F32(x), CpuStorage::F32(y)) => {
                CpuStorage::F32(where_cond(c, lc, x, la, y, lb))
            }
            (CpuStorage::F64(c), CpuStorage::F64(x), CpuStorage::F64(y)) => {
                CpuStorage::F64(where_cond(c, lc, x, la, y, lb))
            }
            (_, CpuStorage::F32(x), CpuStorage::F32(y)) => any_cond!(x, y, CpuStorage::F32),
            (_, CpuStorage::F64(x), CpuStorage::F64(y)) => any_cond!(x, y, CpuStorage::F64),
            (_, CpuStorage::I64(x), CpuStorage::I64(y)) => any_cond!(x, y, CpuStorage::I64),
            (_, x, y) => return Err(mismatch("where_cond", x, y)),
        })
    }

    fn reduce(&self, op: ReduceOp, src: &dyn BackendStorage, l: &Layout, axes: &[usize]) -> Result<BoxStorage> {
        check_axes("reduce", axes, l.shape())?;
        boxed(match view("reduce", src, l)? {
            CpuStorage::F32(v) => CpuStorage::F32(kernels::reduce::reduce(op, v, l, axes)),
            CpuStorage::F64(v) => CpuStorage::F64(kernels::reduce::reduce(op, v, l, axes)),
            s => return Err(unsupported("reduce", s, l.shape())),
        })
    }

    fn matmul(&self, a: &dyn BackendStorage, la: &Layout, b: &dyn BackendStorage, lb: &Layout) -> Result<BoxStorage> {
        const OP: &str = "matmul";
        kernels::matmul::check_shapes(la, lb)?;
        let (x, y) = (view(OP, a, la)?, view(OP, b, lb)?);
        // the output [batch.., m, n]: `la`'s dims but the last, times n
        let n = lb.shape()[lb.rank() - 1];
        let rows = &la.shape()[..la.rank() - 1];
        match rows.iter().try_fold(n, |acc, &d| acc.checked_mul(d)) {
            Some(len) => check_alloc(OP, len, x.dtype())?,
            None => {
                return Err(Error::invalid(
                    OP,
                    format!("the output of {:?} · {:?} overflows usize", la.shape(), lb.shape()),
                ))
            }
        }
        boxed(match (x, y) {
            (CpuStorage::F32(x), CpuStorage::F32(y)) => CpuStorage::F32(kernels::matmul::matmul(x, la, y, lb)),
            (CpuStorage::F64(x), CpuStorage::F64(y)) => CpuStorage::F64(kernels::matmul::matmul(x, la, y, lb)),
            (x, y) => return Err(mismatch("matmul", x, y)),
        })
    }

    fn index_select(
        &self,
        src: &dyn BackendStorage,
        sl: &Layout,
        ids: &dyn BackendStorage,
        il: &Layout,
        dim: usize,
    ) -> Result<BoxStorage> {
        let ids = ids_of(ids, il, "index_select")?;
        use kernels::index::index_select;
        boxed(match view("index_select", src, sl)? {
            CpuStorage::F32(v) => CpuStorage::F32(index_select(v, sl, &ids, dim)?),
            CpuStorage::F64(v) => CpuStorage::F64(index_select(v, sl, &ids, dim)?),
            CpuStorage::I64(v) => CpuStorage::I64(index_select(v, sl, &ids, dim)?),
        })
    }

    fn index_add(
        &self,
        dst: &mut dyn BackendStorage,
        shape: &[usize],
        dim: usize,
        ids: &dyn BackendStorage,
        il: &Layout,
        src: &dyn BackendStorage,
        sl: &Layout,
    ) -> Result<()> {
        let ids = ids_of(ids, il, "index_add")?;
        use kernels::index::index_add;
        let dl = Layout::contiguous(shape);
        match (view_mut("index_add", dst, &dl)?, view("index_add", src, sl)?) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => index_add(d, shape, dim, &ids, s, sl),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => index_add(d, shape, dim, &ids, s, sl),
            (d, s) => Err(mismatch("index_add", d, s)),
        }
    }

    fn gather(
        &self,
        src: &dyn BackendStorage,
        sl: &Layout,
        ids: &dyn BackendStorage,
        il: &Layout,
        dim: usize,
    ) -> Result<BoxStorage> {
        let idv = ids_of(ids, il, "gather")?;
        use kernels::index::gather;
        boxed(match view("gather", src, sl)? {
            CpuStorage::F32(v) => CpuStorage::F32(gather(v, sl, &idv, il.shape(), dim)?),
            CpuStorage::F64(v) => CpuStorage::F64(gather(v, sl, &idv, il.shape(), dim)?),
            CpuStorage::I64(v) => CpuStorage::I64(gather(v, sl, &idv, il.shape(), dim)?),
        })
    }

    fn scatter_add(
        &self,
        dst: &mut dyn BackendStorage,
        shape: &[usize],
        dim: usize,
        ids: &dyn BackendStorage,
        il: &Layout,
        src: &dyn BackendStorage,
        sl: &Layout,
    ) -> Result<()> {
        let idv = ids_of(ids, il, "scatter_add")?;
        use kernels::index::scatter_add;
        let dl = Layout::contiguous(shape);
        match (view_mut("scatter_add", dst, &dl)?, view("scatter_add", src, sl)?) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => scatter_add(d, shape, dim, &idv, il.shape(), s, sl),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => scatter_add(d, shape, dim, &idv, il.shape(), s, sl),
            (d, s) => Err(mismatch("scatter_add", d, s)),
        }
    }

    fn softmax_last(&self, src: &dyn BackendStorage, l: &Layout) -> Result<BoxStorage> {
        boxed(kernels::softmax::softmax_last(
            view_out("softmax_last", src, l)?,
            l,
            false,
        )?)
    }

    fn log_softmax_last(&self, src: &dyn BackendStorage, l: &Layout) -> Result<BoxStorage> {
        boxed(kernels::softmax::softmax_last(
            view_out("log_softmax_last", src, l)?,
            l,
            true,
        )?)
    }

    fn softmax_last_backward(
        &self,
        y: &dyn BackendStorage,
        dy: &dyn BackendStorage,
        shape: &[usize],
    ) -> Result<BoxStorage> {
        let (y, dy) = (get(y)?, get(dy)?);
        check_dense_pair("softmax_last_backward", y, dy, shape)?;
        boxed(kernels::softmax::softmax_last_backward(y, dy, shape, false)?)
    }

    fn log_softmax_last_backward(
        &self,
        y: &dyn BackendStorage,
        dy: &dyn BackendStorage,
        shape: &[usize],
    ) -> Result<BoxStorage> {
        let (y, dy) = (get(y)?, get(dy)?);
        check_dense_pair("log_softmax_last_backward", y, dy, shape)?;
        boxed(kernels::softmax::softmax_last_backward(y, dy, shape, true)?)
    }

    fn moments_last(&self, src: &dyn BackendStorage, l: &Layout) -> Result<(BoxStorage, BoxStorage)> {
        let (m, v) = kernels::norm::moments_last(view("moments_last", src, l)?, l)?;
        Ok((Box::new(m), Box::new(v)))
    }

    fn norm_last(
        &self,
        x: &dyn BackendStorage,
        rows: usize,
        n: usize,
        weight: Option<&dyn BackendStorage>,
        bias: Option<&dyn BackendStorage>,
        eps: f64,
        rms: bool,
    ) -> Result<(BoxStorage, BoxStorage, BoxStorage)> {
        let (w, b) = (weight.map(get).transpose()?, bias.map(get).transpose()?);
        boxed3(kernels::norm::norm_last(get(x)?, rows, n, w, b, eps, rms)?)
    }

    fn norm_last_backward(
        &self,
        x: &dyn BackendStorage,
        mean: &dyn BackendStorage,
        rstd: &dyn BackendStorage,
        weight: Option<&dyn BackendStorage>,
        dy: &dyn BackendStorage,
        rows: usize,
        n: usize,
        rms: bool,
    ) -> Result<(BoxStorage, Option<BoxStorage>, Option<BoxStorage>)> {
        let w = weight.map(get).transpose()?;
        let (dx, dw, db) =
            kernels::norm::norm_last_backward(get(x)?, get(mean)?, get(rstd)?, w, get(dy)?, rows, n, rms)?;
        let wrap = |s: Option<CpuStorage>| s.map(|s| Box::new(s) as BoxStorage);
        Ok((Box::new(dx), wrap(dw), wrap(db)))
    }

    fn adam_update(
        &self,
        param: &dyn BackendStorage,
        grad: &dyn BackendStorage,
        m: Option<&dyn BackendStorage>,
        v: Option<&dyn BackendStorage>,
        len: usize,
        h: &AdamStep,
    ) -> Result<(BoxStorage, BoxStorage, BoxStorage)> {
        let (m, v) = (m.map(get).transpose()?, v.map(get).transpose()?);
        boxed3(kernels::optim::adam_update(get(param)?, get(grad)?, m, v, len, h)?)
    }

    // ----- issue 17 (helper "ops"): the sort and scan families -----

    fn arg_reduce(&self, op: ReduceOp, src: &dyn BackendStorage, l: &Layout, axis: usize) -> Result<BoxStorage> {
        boxed(kernels::sort::arg_reduce(op, view("arg_reduce", src, l)?, l, axis)?)
    }

    fn argsort(&self, src: &dyn BackendStorage, l: &Layout, axis: usize, descending: bool) -> Result<BoxStorage> {
        boxed(kernels::sort::argsort(
            view_out("argsort", src, l)?,
            l,
            axis,
            descending,
        )?)
    }

    fn cumsum(&self, src: &dyn BackendStorage, l: &Layout, axis: usize, reverse: bool) -> Result<BoxStorage> {
        boxed(kernels::scan::cumsum(view_out("cumsum", src, l)?, l, axis, reverse)?)
    }

    fn empty(&self, len: usize, dtype: DType) -> Result<BoxStorage> {
        check_alloc("empty", len, dtype)?;
        boxed(CpuStorage::for_overwrite(len, dtype))
    }

    fn attention(&self, a: &unigrad_core::backend::AttentionArgs<'_>) -> Result<(BoxStorage, BoxStorage)> {
        let (o, lse) = kernels::attention::attention(a)?;
        Ok((Box::new(o), Box::new(lse)))
    }

    fn attention_backward(
        &self,
        a: &unigrad_core::backend::AttentionArgs<'_>,
        lse: &dyn BackendStorage,
        dout: &dyn BackendStorage,
        dout_layout: &Layout,
    ) -> Result<(BoxStorage, BoxStorage, BoxStorage)> {
        boxed3(kernels::attention::attention_backward(a, lse, dout, dout_layout)?)
    }
}
