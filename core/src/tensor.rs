//! The `Tensor` type: a strided view of device storage plus its autograd links.
//!
//! A tensor is an `Arc`, so clones are cheap and share data. Views (reshape,
//! transpose, narrow, ...) share the storage and differ only in [`Layout`].
//! Parameters are leaves created with [`Tensor::requires_grad`]; optimizers update
//! them in place with [`Tensor::assign`].
//!
//! Every constructor validates its shape with [`check_shape`]: a shape whose element
//! count overflows `usize` is an error naming the constructor (so no tensor carries a
//! wrapped element count into a kernel). The host buffers of `full`, `randn` and the
//! like are allocated fallibly, so a size memory cannot hold is an error too.

use crate::autograd::{self, Node};
use crate::backend::{BackendStorage, BoxStorage};
use crate::device::Device;
use crate::dtype::{DType, HostData};
use crate::error::{Error, Result};
use crate::hooks::HookSlot;
use crate::layout::Layout;
use crate::rng;
use crate::shape::check_shape;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

pub(crate) struct Inner {
    pub(crate) id: usize,
    pub(crate) storage: RwLock<Arc<dyn BackendStorage>>,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    pub(crate) node: Option<Arc<Node>>,
    /// `Some` for leaves that require a gradient: where `backward` accumulates it.
    pub(crate) grad: Option<Mutex<Option<Tensor>>>,
    /// Gradient hooks and the retain-grad flag ([`crate::hooks`]); empty for most tensors.
    pub(crate) hooks: HookSlot,
}

/// An n-dimensional array on a device, with optional gradient tracking.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

/// Element types that can be moved in and out of tensors as `Vec<T>`.
pub trait Element: Copy + Send + Sync + 'static {
    /// The matching dtype.
    const DTYPE: DType;
    /// Wrap a vector as host data.
    fn into_host(v: Vec<Self>) -> HostData;
    /// Unwrap host data of the matching dtype.
    fn from_host(h: HostData) -> Option<Vec<Self>>;
}

macro_rules! element {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn into_host(v: Vec<Self>) -> HostData {
                HostData::$d(v)
            }
            fn from_host(h: HostData) -> Option<Vec<Self>> {
                match h {
                    HostData::$d(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
element!(f32, F32);
element!(f64, F64);
element!(i64, I64);

impl Tensor {
    // ----- construction -------------------------------------------------------

    /// Wrap fresh storage as a tensor without autograd history.
    pub(crate) fn from_storage(storage: BoxStorage, layout: Layout, device: Device) -> Tensor {
        let dtype = storage.dtype();
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            storage: RwLock::new(Arc::from(storage)),
            layout,
            dtype,
            device,
            node: None,
            grad: None,
            hooks: HookSlot::default(),
        }))
    }

    /// A new tensor sharing this one's storage through another layout (a view).
    pub(crate) fn view_of(&self, layout: Layout) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            storage: RwLock::new(self.storage()),
            layout,
            dtype: self.dtype(),
            device: self.device().clone(),
            node: None,
            grad: None,
            hooks: HookSlot::default(),
        }))
    }

    /// Attach an autograd node (used by `autograd::record`).
    pub(crate) fn with_node(self, node: Arc<Node>) -> Tensor {
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|arc| Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            storage: RwLock::new(arc.storage.read().expect("storage lock").clone()),
            layout: arc.layout.clone(),
            dtype: arc.dtype,
            device: arc.device.clone(),
            node: None,
            grad: None,
            hooks: HookSlot::default(),
        });
        Tensor(Arc::new(Inner {
            node: Some(node),
            grad: None,
            ..inner
        }))
    }

    /// A tensor from host data with the given shape.
    pub fn from_host(data: HostData, shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::from_host_as("from_host", data, shape, device)
    }

    /// [`Tensor::from_host`] reporting errors as `op` (the constructor the user called).
    fn from_host_as(op: &'static str, data: HostData, shape: &[usize], device: &Device) -> Result<Tensor> {
        if data.len() != check_shape(op, shape)? {
            return Err(Error::invalid(
                op,
                format!("{} elements do not fill shape {shape:?}", data.len()),
            ));
        }
        let s = device.backend().from_host(&data)?;
        Ok(Tensor::from_storage(s, Layout::contiguous(shape), device.clone()))
    }

    /// A tensor from a vector of `f32`, `f64` or `i64`.
    pub fn from_vec<T: Element>(v: Vec<T>, shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::from_host_as("from_vec", T::into_host(v), shape, device)
    }

    /// Wrap storage returned by a backend kernel (for instance a fused kernel that a
    /// custom op calls through [`Device::backend`]) as a dense, row-major tensor of
    /// `shape` on `device`, without autograd history. The storage must hold exactly
    /// `shape`'s number of elements and belong to `device`.
    pub fn from_backend_storage(storage: BoxStorage, shape: &[usize], device: &Device) -> Result<Tensor> {
        if storage.len() != check_shape("from_backend_storage", shape)? {
            return Err(Error::invalid(
                "from_backend_storage",
                format!("storage of {} elements does not fill shape {shape:?}", storage.len()),
            ));
        }
        Ok(Tensor::from_storage(storage, Layout::contiguous(shape), device.clone()))
    }

    /// A tensor of `dtype` from f64 values.
    pub fn from_f64s(v: &[f64], shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::from_host_as("from_f64s", HostData::from_f64(v.to_vec(), dtype), shape, device)
    }

    /// A rank-0 tensor holding `v`.
    pub fn scalar(v: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::from_f64s(&[v], &[], dtype, device)
    }

    /// Zeros.
    pub fn zeros(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let s = device.backend().zeros(check_shape("zeros", shape)?, dtype)?;
        Ok(Tensor::from_storage(s, Layout::contiguous(shape), device.clone()))
    }

    /// Every element equal to `v`.
    pub fn full(shape: &[usize], v: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        let data = host_values("full", shape, || v)?;
        Tensor::from_host_as("full", HostData::from_f64(data, dtype), shape, device)
    }

    /// Ones.
    pub fn ones(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 1.0, dtype, device)
    }

    /// `0, 1, .., n-1`.
    pub fn arange(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let mut i = 0.0;
        let v = host_values("arange", &[n], || {
            i += 1.0;
            i - 1.0
        })?;
        Tensor::from_host_as("arange", HostData::from_f64(v, dtype), &[n], device)
    }

    /// `start, start + step, ..` up to but excluding `end`, as PyTorch's
    /// `arange(start, end, step)`: `⌈(end − start) / step⌉` elements, computed as
    /// `start + i·step` in f64 and then converted to `dtype` (i64 truncates, so pass
    /// integers for i64). A zero or non-finite `step`, non-finite bounds, and a
    /// step pointing away from `end` are errors.
    pub fn arange_step(start: f64, end: f64, step: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        const OP: &str = "arange_step";
        let span = (end - start) / step;
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() || span < 0.0 {
            return Err(Error::invalid(
                OP,
                format!("start {start}, end {end}, step {step}: need finite bounds and a non-zero step pointing from start to end"),
            ));
        }
        if span.ceil() >= usize::MAX as f64 {
            return Err(Error::invalid(OP, format!("{} elements do not fit usize", span.ceil())));
        }
        let n = span.ceil() as usize;
        let mut i = 0.0;
        let v = host_values(OP, &[n], || {
            i += 1.0;
            start + (i - 1.0) * step
        })?;
        Tensor::from_host_as(OP, HostData::from_f64(v, dtype), &[n], device)
    }

    /// Standard normal samples from the global seeded generator ([`rng::manual_seed`]).
    pub fn randn(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let v = rng::with_rng(|r| host_values("randn", shape, || r.normal()))?;
        Tensor::from_host_as("randn", HostData::from_f64(v, dtype), shape, device)
    }

    /// Uniform samples in `[lo, hi)` from the global seeded generator.
    pub fn rand_uniform(shape: &[usize], lo: f64, hi: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        let v = rng::with_rng(|r| host_values("rand_uniform", shape, || lo + (hi - lo) * r.uniform()))?;
        Tensor::from_host_as("rand_uniform", HostData::from_f64(v, dtype), shape, device)
    }

    /// Bernoulli samples: 1 with probability `p`, else 0.
    pub fn bernoulli(shape: &[usize], p: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid("bernoulli", format!("probability {p} is not in [0, 1]")));
        }
        let v = rng::with_rng(|r| host_values("bernoulli", shape, || if r.uniform() < p { 1.0 } else { 0.0 }))?;
        Tensor::from_host_as("bernoulli", HostData::from_f64(v, dtype), shape, device)
    }

    /// [`Tensor::randn`] drawing from the explicit generator `gen` instead of the global
    /// one (reproducible per generator, whichever thread draws; see [`rng`]).
    pub fn randn_with(shape: &[usize], dtype: DType, device: &Device, gen: &mut rng::Generator) -> Result<Tensor> {
        rng::with_generator(gen, || Tensor::randn(shape, dtype, device))
    }

    /// [`Tensor::rand_uniform`] drawing from the explicit generator `gen`.
    pub fn rand_uniform_with(
        shape: &[usize],
        lo: f64,
        hi: f64,
        dtype: DType,
        device: &Device,
        gen: &mut rng::Generator,
    ) -> Result<Tensor> {
        rng::with_generator(gen, || Tensor::rand_uniform(shape, lo, hi, dtype, device))
    }

    /// [`Tensor::bernoulli`] drawing from the explicit generator `gen`.
    pub fn bernoulli_with(
        shape: &[usize],
        p: f64,
        dtype: DType,
        device: &Device,
        gen: &mut rng::Generator,
    ) -> Result<Tensor> {
        rng::with_generator(gen, || Tensor::bernoulli(shape, p, dtype, device))
    }

    /// Zeros with this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.dtype(), self.device())
    }

    /// Ones with this tensor's shape, dtype and device.
    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape(), self.dtype(), self.device())
    }

    // ----- accessors ----------------------------------------------------------

    /// Logical shape.
    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.layout.rank()
    }

    /// Size of dimension `dim` (negative counts from the end), like PyTorch's
    /// `size(dim)`. Not the number of dimensions (that is [`Tensor::rank`], PyTorch's
    /// `dim()`).
    pub fn dim(&self, dim: isize) -> Result<usize> {
        let d = crate::shape::normalize_axis("dim", dim, self.shape())?;
        Ok(self.shape()[d])
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// The device holding the data.
    pub fn device(&self) -> &Device {
        &self.0.device
    }

    /// The strided layout over the storage.
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    /// The storage (shared with views of this tensor).
    pub fn storage(&self) -> Arc<dyn BackendStorage> {
        self.0.storage.read().expect("storage lock poisoned").clone()
    }

    /// A process-unique id (differs between views of the same storage).
    pub fn id(&self) -> usize {
        self.0.id
    }

    /// True when the layout is dense row-major.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }

    /// Copy to the host as `Vec<T>`; the dtype must match `T`.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if self.dtype() != T::DTYPE {
            return Err(Error::DTypeMismatch {
                op: "to_vec",
                lhs: self.dtype(),
                rhs: T::DTYPE,
            });
        }
        let h = self.to_host()?;
        Ok(T::from_host(h).expect("dtype checked above"))
    }

    /// Copy to the host, converting every element to f64.
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        Ok(self.to_host()?.to_f64())
    }

    /// Copy to the host in logical row-major order.
    pub fn to_host(&self) -> Result<HostData> {
        let s = self.storage();
        self.device().backend().to_host(&*s, self.layout())
    }

    /// The single value of a one-element tensor, as f64.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::invalid(
                "to_scalar",
                format!(
                    "tensor of shape {:?} has {} elements, not 1",
                    self.shape(),
                    self.numel()
                ),
            ));
        }
        Ok(self.to_vec_f64()?[0])
    }

    // ----- autograd handles ---------------------------------------------------

    /// Make this tensor require a gradient. On a tensor that does not track gradients
    /// (fresh data, or a result computed under [`no_grad`](crate::no_grad)) it returns
    /// a new leaf sharing the data: gradients of later `backward` calls accumulate in
    /// its [`Tensor::grad`] until [`Tensor::zero_grad`]. The returned handle has its
    /// own identity: gradients reach it, not other clones of the original.
    ///
    /// On a tensor that already tracks gradients it is a no-op returning `self`, as
    /// PyTorch's `requires_grad_(True)` is: a leaf stays the same leaf, and an op result
    /// stays an op result, still connected to its inputs (the graph is never cut). To
    /// read an op result's gradient, call [`Tensor::retain_grad`]; to start a new graph
    /// from its values, use `.detach().requires_grad()`.
    ///
    /// As in PyTorch, only floating-point tensors can require a gradient. A non-float
    /// (`i64`) tensor is returned as an untracked handle ([`Tensor::detach`]), so it
    /// never gets a gradient; [`Tensor::try_requires_grad`] reports that case as an
    /// error instead.
    ///
    /// ```
    /// # use unigrad_core::{Device, Result, Tensor};
    /// # fn demo(dev: &Device) -> Result<()> {
    /// let x = Tensor::from_vec(vec![2.0f64], &[1], dev)?.requires_grad();
    /// let h = x.sqr()?.requires_grad(); // no-op: h is still x², connected to x
    /// h.sum_all()?.backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec::<f64>()?, vec![4.0]);
    /// let leaf = h.detach().requires_grad(); // a new leaf holding h's values
    /// assert!(leaf.is_grad_leaf());
    /// # Ok(()) }
    /// ```
    pub fn requires_grad(self) -> Tensor {
        if !self.dtype().is_float() {
            return self.detach();
        }
        if self.tracks_grad() {
            return self;
        }
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            storage: RwLock::new(self.storage()),
            layout: self.layout().clone(),
            dtype: self.dtype(),
            device: self.device().clone(),
            node: None,
            grad: Some(Mutex::new(None)),
            hooks: HookSlot::default(),
        }))
    }

    /// [`Tensor::requires_grad`], but a non-float tensor is an error naming its dtype
    /// and shape (PyTorch: "only Tensors of floating point dtype can require
    /// gradients").
    pub fn try_requires_grad(self) -> Result<Tensor> {
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: "requires_grad",
                dtype: self.dtype(),
                shape: self.shape().to_vec(),
            });
        }
        Ok(self.requires_grad())
    }

    /// True when gradients flow into this tensor (a grad leaf or an op result
    /// recorded while gradients were enabled).
    pub fn tracks_grad(&self) -> bool {
        self.0.grad.is_some() || self.0.node.is_some()
    }

    /// True for leaves created with [`Tensor::requires_grad`].
    pub fn is_grad_leaf(&self) -> bool {
        self.0.grad.is_some()
    }

    /// The accumulated gradient of a leaf, or of an op result that retains its
    /// gradient ([`Tensor::retain_grad`]), if any backward reached it.
    pub fn grad(&self) -> Option<Tensor> {
        match &self.0.grad {
            Some(g) => g.lock().expect("grad lock").clone(),
            None => self.retained_grad(),
        }
    }

    /// Clear the accumulated gradient (a leaf's, or a retained one).
    pub fn zero_grad(&self) {
        if let Some(g) = &self.0.grad {
            *g.lock().expect("grad lock") = None;
        }
        self.clear_retained_grad();
    }

    /// Replace the accumulated gradient (e.g. after clipping) of a leaf or of an op
    /// result that retains its gradient ([`Tensor::retain_grad`]).
    pub fn set_grad(&self, grad: Option<Tensor>) -> Result<()> {
        if let Some(g) = &grad {
            check_same_meta("set_grad", self, g)?;
        }
        let grad = grad.map(|g| g.detach());
        match &self.0.grad {
            Some(slot) => *slot.lock().expect("grad lock") = grad,
            None if self.set_retained_grad(grad) => {}
            None => {
                return Err(Error::invalid(
                    "set_grad",
                    format!(
                        "tensor of shape {:?} is neither a grad leaf nor retains its gradient",
                        self.shape()
                    ),
                ))
            }
        }
        Ok(())
    }

    /// The same data without autograd history (a new, untracked handle).
    pub fn detach(&self) -> Tensor {
        self.view_of(self.layout().clone())
    }

    /// Overwrite this tensor's data with `src`'s (same shape, dtype and device). Used
    /// by optimizers on parameters: the parameter keeps its identity and grad slot.
    /// `self` must be dense (a strided view is an error).
    ///
    /// This swaps in new storage rather than writing into the old buffer. Clones of
    /// this handle see the new data, but unlike with PyTorch's in-place `copy_`, views
    /// taken before `assign` (`narrow`, `transpose`, `reshape`, `detach`, ...) keep
    /// reading the old data.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        check_same_meta("assign", self, src)?;
        let dense = if src.is_contiguous() && src.layout().offset() == 0 && src.storage().len() == src.numel() {
            src.storage()
        } else {
            Arc::from(autograd::no_grad(|| src.contiguous_storage())?)
        };
        if !self.is_contiguous() || self.layout().offset() != 0 {
            return Err(Error::invalid(
                "assign",
                format!(
                    "target of shape {:?} is a strided view; assign to a dense tensor",
                    self.shape()
                ),
            ));
        }
        *self.0.storage.write().expect("storage lock") = dense;
        Ok(())
    }

    /// Compute the backward pass from this scalar, accumulating into grad leaves.
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::BackwardNonScalar {
                shape: self.shape().to_vec(),
            });
        }
        let seed = Tensor::ones(self.shape(), self.dtype(), self.device())?;
        autograd::backward(self, seed, autograd::BackwardOptions::default())
    }

    /// Backward pass with an explicit upstream gradient of this tensor's shape.
    pub fn backward_with(&self, grad: &Tensor) -> Result<()> {
        check_same_meta("backward_with", self, grad)?;
        autograd::backward(self, grad.detach(), autograd::BackwardOptions::default())
    }

    /// Backward pass with options: `grad` is the upstream gradient (`None`: this
    /// tensor must be a scalar, seeded with 1), and `opts` may keep the graph
    /// (`retain_graph`) or record the pass so the accumulated gradients can be
    /// differentiated again (`create_graph`, PyTorch's
    /// `backward(create_graph=True)`). With `create_graph` an explicit `grad` keeps
    /// its own history, so the result is differentiable with respect to it too.
    ///
    /// With `create_graph` a leaf's accumulated gradient is a recorded tensor whose
    /// graph holds the leaf itself, so the two keep each other alive until the
    /// gradient is cleared ([`Tensor::zero_grad`]); as in PyTorch,
    /// [`autograd::grad`] (which accumulates nothing) avoids that.
    pub fn backward_with_options(&self, grad: Option<&Tensor>, opts: autograd::BackwardOptions) -> Result<()> {
        let seed = match grad {
            Some(g) => {
                check_same_meta("backward_with_options", self, g)?;
                if opts.create_graph {
                    g.clone()
                } else {
                    g.detach()
                }
            }
            None => {
                if self.numel() != 1 {
                    return Err(Error::BackwardNonScalar {
                        shape: self.shape().to_vec(),
                    });
                }
                Tensor::ones(self.shape(), self.dtype(), self.device())?
            }
        };
        autograd::backward(self, seed, opts)
    }

    /// Dense storage with this tensor's elements in row-major order.
    pub(crate) fn contiguous_storage(&self) -> Result<BoxStorage> {
        let b = self.device().backend();
        // every element is overwritten by the copy: no zero fill needed
        let mut dst = b.empty(self.numel(), self.dtype())?;
        let src = self.storage();
        b.copy_strided(&*src, self.layout(), &mut *dst, &Layout::contiguous(self.shape()))?;
        Ok(dst)
    }
}

/// `shape`'s elements produced by `f` in a host vector, with the shape checked
/// ([`check_shape`]) and the allocation fallible: a shape too large for memory is an
/// error naming `op`, not an abort.
fn host_values(op: &'static str, shape: &[usize], mut f: impl FnMut() -> f64) -> Result<Vec<f64>> {
    let n = check_shape(op, shape)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::invalid(
            op,
            format!("cannot allocate {n} elements on the host for shape {shape:?}"),
        )
    })?;
    v.extend((0..n).map(|_| f()));
    Ok(v)
}

/// Check that two tensors agree in shape, dtype and device (errors name `op`).
pub fn check_same_meta(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: a.shape().to_vec(),
            rhs: b.shape().to_vec(),
        });
    }
    check_same_kind(op, a, b)
}

/// Check that two tensors agree in dtype and device; the error names `op` and both
/// dtypes (or devices). Public for layers and custom ops that take several tensors.
pub fn check_same_kind(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    if !a.device().same(b.device()) {
        return Err(Error::DeviceMismatch {
            op,
            lhs: a.device().name(),
            rhs: b.device().name(),
        });
    }
    Ok(())
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor(shape={:?}, dtype={}, device={}",
            self.shape(),
            self.dtype(),
            self.device()
        )?;
        if let Some(n) = &self.0.node {
            write!(f, ", op={}", n.op)?;
        }
        if self.numel() <= 16 {
            if let Ok(v) = self.to_vec_f64() {
                write!(f, ", data={v:?}")?;
            }
        }
        write!(f, ")")
    }
}
