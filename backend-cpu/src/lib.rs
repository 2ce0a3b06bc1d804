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
//! Layout: `storage.rs` (the `Vec` per dtype), `pool.rs` (buffer recycling),
//! `simd.rs` (run-time dispatch, libm-free `exp`/`log`/`tanh`), `strided.rs`
//! (iteration plans over strided layouts), `elem.rs` (the float trait, erf), and
//! `kernels/`, one file per op family matching `core/src/ops/`.

#![warn(missing_docs)]

pub mod elem;
pub mod kernels;
pub mod pool;
pub mod simd;
pub mod storage;
pub mod strided;

use kernels::copy::{copy_strided, to_dense};
use std::sync::{Arc, OnceLock};
pub use storage::CpuStorage;
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

fn unsupported(op: &'static str, s: &CpuStorage, l: &Layout) -> Error {
    Error::UnsupportedDType {
        op,
        dtype: s.dtype(),
        shape: l.shape().to_vec(),
    }
}

fn mismatch(op: &'static str, a: &CpuStorage, b: &CpuStorage) -> Error {
    Error::DTypeMismatch {
        op,
        lhs: a.dtype(),
        rhs: b.dtype(),
    }
}

fn ids_of(s: &dyn BackendStorage, l: &Layout, op: &'static str) -> Result<Vec<i64>> {
    match get(s)? {
        CpuStorage::I64(v) => Ok(to_dense(v, l)),
        other => Err(Error::invalid(
            op,
            format!("indices must be i64, got {}", other.dtype()),
        )),
    }
}

/// The elements of `s` as a slice of `T`, or a dtype-mismatch error against `first`.
fn slice_of<'a, T: StorageElem>(op: &'static str, s: &'a CpuStorage, first: &CpuStorage) -> Result<&'a [T]> {
    T::of(s).ok_or_else(|| mismatch(op, first, s))
}

/// The first `len` elements of `s`, or an error naming `op` when the storage is
/// shorter than the sizes the caller passed (a fused kernel must not index past it).
fn need<'a, T>(op: &'static str, s: &'a [T], len: usize) -> Result<&'a [T]> {
    s.get(..len).ok_or_else(|| {
        Error::invalid(
            op,
            format!("storage of {} elements where the given sizes need {len}", s.len()),
        )
    })
}

/// [`slice_of`] of an optional operand.
fn opt_slice_of<'a, T: StorageElem>(
    op: &'static str,
    s: Option<&'a CpuStorage>,
    first: &CpuStorage,
) -> Result<Option<&'a [T]>> {
    s.map(|s| slice_of(op, s, first)).transpose()
}

/// Float element types of [`CpuStorage`].
trait StorageElem: Sized {
    fn of(s: &CpuStorage) -> Option<&[Self]>;
}

impl StorageElem for f32 {
    fn of(s: &CpuStorage) -> Option<&[f32]> {
        match s {
            CpuStorage::F32(d) => Some(d),
            _ => None,
        }
    }
}

impl StorageElem for f64 {
    fn of(s: &CpuStorage) -> Option<&[f64]> {
        match s {
            CpuStorage::F64(d) => Some(d),
            _ => None,
        }
    }
}

fn boxed(s: CpuStorage) -> Result<BoxStorage> {
    Ok(Box::new(s))
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        "cpu".into()
    }

    fn zeros(&self, len: usize, dtype: DType) -> Result<BoxStorage> {
        boxed(CpuStorage::zeros(len, dtype))
    }

    fn from_host(&self, data: &HostData) -> Result<BoxStorage> {
        boxed(CpuStorage::from_host(data.clone()))
    }

    fn to_host(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<HostData> {
        Ok(match get(src)? {
            CpuStorage::F32(v) => HostData::F32(to_dense(v, layout)),
            CpuStorage::F64(v) => HostData::F64(to_dense(v, layout)),
            CpuStorage::I64(v) => HostData::I64(to_dense(v, layout)),
        })
    }

    fn copy_strided(
        &self,
        src: &dyn BackendStorage,
        sl: &Layout,
        dst: &mut dyn BackendStorage,
        dl: &Layout,
    ) -> Result<()> {
        if sl.shape() != dl.shape() {
            return Err(Error::ShapeMismatch {
                op: "copy_strided",
                lhs: sl.shape().to_vec(),
                rhs: dl.shape().to_vec(),
            });
        }
        if dl.storage_extent() > dst.len() || sl.storage_extent() > src.len() {
            return Err(Error::invalid("copy_strided", "layout exceeds its storage"));
        }
        let s = get(src)?;
        match (s, get_mut(dst)?) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => copy_strided(a, sl, b, dl),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => copy_strided(a, sl, b, dl),
            (CpuStorage::I64(a), CpuStorage::I64(b)) => copy_strided(a, sl, b, dl),
            (a, b) => return Err(mismatch("copy_strided", a, b)),
        }
        Ok(())
    }

    fn cast(&self, src: &dyn BackendStorage, l: &Layout, dtype: DType) -> Result<BoxStorage> {
        let h = self.to_host(src, l)?;
        let out = match (h, dtype) {
            (HostData::F32(v), DType::F64) => HostData::F64(v.into_iter().map(|x| x as f64).collect()),
            (HostData::F64(v), DType::F32) => HostData::F32(v.into_iter().map(|x| x as f32).collect()),
            (h, d) if h.dtype() == d => h,
            (h, d) => HostData::from_f64(h.to_f64(), d),
        };
        boxed(CpuStorage::from_host(out))
    }

    fn unary(&self, op: UnaryOp, src: &dyn BackendStorage, l: &Layout) -> Result<BoxStorage> {
        boxed(match get(src)? {
            CpuStorage::F32(v) => CpuStorage::F32(kernels::elementwise::unary(op, v, l)),
            CpuStorage::F64(v) => CpuStorage::F64(kernels::elementwise::unary(op, v, l)),
            s => return Err(unsupported("unary", s, l)),
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
        boxed(match (get(a)?, get(b)?) {
            (CpuStorage::F32(x), CpuStorage::F32(y)) => CpuStorage::F32(kernels::elementwise::binary(op, x, la, y, lb)),
            (CpuStorage::F64(x), CpuStorage::F64(y)) => CpuStorage::F64(kernels::elementwise::binary(op, x, la, y, lb)),
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
        use kernels::elementwise::where_cond;
        boxed(match (get(c)?, get(a)?, get(b)?) {
            (CpuStorage::F32(c), CpuStorage::F32(x), CpuStorage::F32(y)) => {
                CpuStorage::F32(where_cond(c, lc, x, la, y, lb))
            }
            (CpuStorage::F64(c), CpuStorage::F64(x), CpuStorage::F64(y)) => {
                CpuStorage::F64(where_cond(c, lc, x, la, y, lb))
            }
            (c, x, _) => return Err(mismatch("where_cond", c, x)),
        })
    }

    fn reduce(&self, op: ReduceOp, src: &dyn BackendStorage, l: &Layout, axes: &[usize]) -> Result<BoxStorage> {
        boxed(match get(src)? {
            CpuStorage::F32(v) => CpuStorage::F32(kernels::reduce::reduce(op, v, l, axes)),
            CpuStorage::F64(v) => CpuStorage::F64(kernels::reduce::reduce(op, v, l, axes)),
            s => return Err(unsupported("reduce", s, l)),
        })
    }

    fn matmul(&self, a: &dyn BackendStorage, la: &Layout, b: &dyn BackendStorage, lb: &Layout) -> Result<BoxStorage> {
        boxed(match (get(a)?, get(b)?) {
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
        boxed(match get(src)? {
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
        match (get_mut(dst)?, get(src)?) {
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
        boxed(match get(src)? {
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
        match (get_mut(dst)?, get(src)?) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => scatter_add(d, shape, dim, &idv, il.shape(), s, sl),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => scatter_add(d, shape, dim, &idv, il.shape(), s, sl),
            (d, s) => Err(mismatch("scatter_add", d, s)),
        }
    }

    fn softmax_last(&self, src: &dyn BackendStorage, l: &Layout) -> Result<BoxStorage> {
        self.softmax_fwd(src, l, false)
    }

    fn log_softmax_last(&self, src: &dyn BackendStorage, l: &Layout) -> Result<BoxStorage> {
        self.softmax_fwd(src, l, true)
    }

    fn softmax_last_backward(
        &self,
        y: &dyn BackendStorage,
        dy: &dyn BackendStorage,
        shape: &[usize],
    ) -> Result<BoxStorage> {
        self.softmax_bwd(y, dy, shape, false)
    }

    fn log_softmax_last_backward(
        &self,
        y: &dyn BackendStorage,
        dy: &dyn BackendStorage,
        shape: &[usize],
    ) -> Result<BoxStorage> {
        self.softmax_bwd(y, dy, shape, true)
    }

    fn moments_last(&self, src: &dyn BackendStorage, l: &Layout) -> Result<(BoxStorage, BoxStorage)> {
        let (n, rows) = match l.shape().split_last() {
            Some((&n, rest)) => (n, rest.iter().product()),
            None => (1, 1),
        };
        use kernels::softmax::moments;
        let (m, v) = match get(src)? {
            CpuStorage::F32(x) => {
                let (m, v) = moments(&kernels::copy::dense_cow(x, l), rows, n);
                (CpuStorage::F32(m), CpuStorage::F32(v))
            }
            CpuStorage::F64(x) => {
                let (m, v) = moments(&kernels::copy::dense_cow(x, l), rows, n);
                (CpuStorage::F64(m), CpuStorage::F64(v))
            }
            s => return Err(unsupported("moments_last", s, l)),
        };
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
        let l = Layout::contiguous(&[rows, n]);
        let (w, b) = (weight.map(get).transpose()?, bias.map(get).transpose()?);
        macro_rules! run {
            ($v:ident, $t:ty, $x:expr) => {{
                let first = get(x)?;
                let (ws, bs) = (
                    opt_slice_of::<$t>("norm_last", w, first)?,
                    opt_slice_of::<$t>("norm_last", b, first)?,
                );
                let (ws, bs) = (
                    ws.map(|w| need("norm_last", w, n)).transpose()?,
                    bs.map(|b| need("norm_last", b, n)).transpose()?,
                );
                let xs = need("norm_last", &$x[..], rows * n)?;
                let (y, m, r) = kernels::norm::norm_forward(xs, rows, n, ws, bs, eps, rms);
                Ok((
                    boxed(CpuStorage::$v(y))?,
                    boxed(CpuStorage::$v(m))?,
                    boxed(CpuStorage::$v(r))?,
                ))
            }};
        }
        match get(x)? {
            CpuStorage::F32(d) => run!(F32, f32, d),
            CpuStorage::F64(d) => run!(F64, f64, d),
            s => Err(unsupported("norm_last", s, &l)),
        }
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
        let l = Layout::contiguous(&[rows, n]);
        let w = weight.map(get).transpose()?;
        let (sx, sm, sr, sg) = (get(x)?, get(mean)?, get(rstd)?, get(dy)?);
        macro_rules! run {
            ($v:ident, $t:ty, $x:expr) => {{
                let one = |s| slice_of::<$t>("norm_last_backward", s, sx);
                let wd = match w {
                    None => None,
                    Some(s) => Some(need("norm_last_backward", one(s)?, n)?),
                };
                let (dx, dw, db) = kernels::norm::norm_backward(
                    need("norm_last_backward", &$x[..], rows * n)?,
                    need("norm_last_backward", one(sg)?, rows * n)?,
                    need("norm_last_backward", one(sm)?, rows)?,
                    need("norm_last_backward", one(sr)?, rows)?,
                    wd,
                    n,
                    rms,
                );
                let db = if rms { None } else { db };
                let wrap = |v: Option<Vec<_>>| v.map(|v| Box::new(CpuStorage::$v(v)) as BoxStorage);
                Ok((boxed(CpuStorage::$v(dx))?, wrap(dw), wrap(db)))
            }};
        }
        match sx {
            CpuStorage::F32(d) => run!(F32, f32, d),
            CpuStorage::F64(d) => run!(F64, f64, d),
            s => Err(unsupported("norm_last_backward", s, &l)),
        }
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
        let l = Layout::contiguous(&[len]);
        let (sp, sg) = (get(param)?, get(grad)?);
        let (sm, sv) = (m.map(get).transpose()?, v.map(get).transpose()?);
        macro_rules! run {
            ($v:ident, $t:ty, $p:expr) => {{
                let g = need("adam_update", slice_of::<$t>("adam_update", sg, sp)?, len)?;
                let m = opt_slice_of::<$t>("adam_update", sm, sp)?
                    .map(|d| need("adam_update", d, len))
                    .transpose()?;
                let v = opt_slice_of::<$t>("adam_update", sv, sp)?
                    .map(|d| need("adam_update", d, len))
                    .transpose()?;
                let (np, nm, nv) = kernels::norm::adam(need("adam_update", &$p[..], len)?, g, m, v, h);
                Ok((
                    boxed(CpuStorage::$v(np))?,
                    boxed(CpuStorage::$v(nm))?,
                    boxed(CpuStorage::$v(nv))?,
                ))
            }};
        }
        match sp {
            CpuStorage::F32(d) => run!(F32, f32, d),
            CpuStorage::F64(d) => run!(F64, f64, d),
            s => Err(unsupported("adam_update", s, &l)),
        }
    }
}

impl CpuBackend {
    fn softmax_fwd(&self, src: &dyn BackendStorage, l: &Layout, log: bool) -> Result<BoxStorage> {
        let n = *l.shape().last().unwrap_or(&1);
        use kernels::softmax::softmax;
        boxed(match get(src)? {
            CpuStorage::F32(x) => CpuStorage::F32(softmax(&kernels::copy::dense_cow(x, l), n, log)),
            CpuStorage::F64(x) => CpuStorage::F64(softmax(&kernels::copy::dense_cow(x, l), n, log)),
            s => return Err(unsupported("softmax", s, l)),
        })
    }

    fn softmax_bwd(
        &self,
        y: &dyn BackendStorage,
        dy: &dyn BackendStorage,
        shape: &[usize],
        log: bool,
    ) -> Result<BoxStorage> {
        let n = *shape.last().unwrap_or(&1);
        use kernels::softmax::softmax_backward;
        boxed(match (get(y)?, get(dy)?) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(softmax_backward(a, b, n, log)),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(softmax_backward(a, b, n, log)),
            (a, b) => return Err(mismatch("softmax_backward", a, b)),
        })
    }
}
