//! Opt-in tracing of normalization statistics, per norm layer and training step.
//!
//! # Why
//!
//! What distinguishes the norms is *which statistic* they divide by and how much it
//! fluctuates from batch to batch: BatchNorm's batch variance against its running
//! variance, UN's batch quadratic mean against its window-smoothed and running versions
//! (plus its gradient scale `r`, outlier skips and calibrated gradient statistic),
//! PowerNorm's quadratic mean against `running_phi`, and LayerNorm's per-token
//! statistics. A [`Tracer`] records those quantities while a model trains, summarised
//! per layer and step (mean, standard deviation, minimum and maximum over channels — or
//! over tokens for LayerNorm), and exports them as CSV, so the curves a teacher would
//! show can be drawn from a real run.
//!
//! # Cost
//!
//! Tracing is attached per layer ([`Traceable::enable_trace`](super::Traceable::enable_trace)
//! on a model attaches every norm in it, named like its parameters: `blocks.0.norm1`). A layer without a trace site
//! does nothing extra: no tensor is read back from the device. With a site attached, each
//! training step copies a few `[C]` vectors to the host (LayerNorm: one mean and one
//! variance per token); [`Tracer::pause`] suspends that, e.g. during evaluation. Gradient
//! records ([`Tracer::set_gradients`], [`Tracer::watch`], [`Tracer::watch_params`]) copy the
//! whole gradient of each traced tensor to the host at every backward: an activation's
//! size per site, so turn them on for the steps you want to look at.
//!
//! # What is recorded
//!
//! Every record is one [`TraceRecord`]: `(step, layer, norm, quantity)` and the summary
//! of that quantity's values. `step` is whatever [`Tracer::set_step`] last set (the
//! training loop's counter). Quantities:
//!
//! | norm | quantity | values |
//! | --- | --- | --- |
//! | BatchNorm | `batch_mean`, `batch_stat` | per-channel batch mean and (biased) variance over valid tokens |
//! | BatchNorm | `running_mean`, `running_stat` | running mean and variance after the step's update |
//! | UN | `batch_stat` | per-channel quadratic mean of the batch (F2) |
//! | UN | `used_stat` | the statistic the forward divided by (F6: smoothed or batch) |
//! | UN | `window_gm` | geometric mean of the forward window `buffer_x2` after the write (0 while it has empty rows) |
//! | UN | `running_stat` | `running_var` after the step |
//! | UN | `r` | the gradient scale of F7 |
//! | UN | `skip`, `treated_as_skip`, `smoothed` | 1 or 0: outlier filter fired (counted), step treated as a skip, smoothed statistic used |
//! | UN | `grad_stat`, `grad_stat_used`, `ema_gz` | backward: B2's `h`, B4's `m`, B5's updated EMA |
//! | PowerNorm | `batch_stat`, `running_stat` | quadratic mean `q` of the group-scaled input; `running_phi` after the step |
//! | PowerNorm | `used_batch_stat` | 1 while the forward divides by `q` (warm-up), 0 when by `φ` |
//! | PowerNorm | `grad_stat`, `ema_gz` | backward: the new term `mean(d·z)` and the running sum `ema_gz` |
//! | BatchNorm, UN, PowerNorm | `fluctuation` | per channel `|batch_stat / running_stat_before − 1|`: how far this batch is from what inference would use |
//! | LayerNorm | `token_mean`, `token_var` | each token's mean and variance over channels, summarised over tokens |
//! | LayerNorm, BatchNorm, UN, PowerNorm | `grad_output` | only with [`Tracer::set_gradients`]: the gradient reaching the norm's output, through a hook (see below) |
//!
//! RMSNorm is not traced.
//!
//! # Gradients and any tensor, through hooks
//!
//! Gradient statistics are read with gradient hooks ([`Tensor::register_hook`]): a hook
//! sees a tensor's total gradient once per backward and records its summary, so the
//! same mechanism traces a norm site, a module's output, an attention score or a
//! parameter, with no code in the layer that produced it.
//!
//! - [`Tracer::set_gradients`] (off by default, so the records above are unchanged):
//!   every traced norm site (LayerNorm, BatchNorm, UN, PowerNorm) also records
//!   `grad_output`, the gradient reaching its output, at each backward.
//! - [`Tracer::watch`] traces any tensor that a forward produced: its values now
//!   (`value`) and its gradient at backward time (`grad`), under a name of your choice.
//! - [`Tracer::watch_params`] traces every parameter's gradient (`grad`, norm field
//!   `param`) of any [`Module`](crate::Module) at each backward, until its handles are
//!   removed.
//!
//! A gradient record's `mean`, `std`, `min` and `max` summarise the gradient's elements;
//! [`TraceRecord::abs_max`] is its largest magnitude. The hooks record with the step
//! current at backward time and nothing while the tracer is paused.
//!
//! This module knows no layer or model: the layers hold a [`TraceSite`] and record into
//! it, and [`Traceable`](super::Traceable) reaches a model's norms through
//! [`Module::visit_norms_mut`](crate::Module::visit_norms_mut).

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use unigrad_core::ops::norm::moments_last;
use unigrad_core::{Error, HookHandle, Result, Tensor};

/// One summarised quantity of one layer at one step.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRecord {
    /// The tracer's step when the value was recorded.
    pub step: u64,
    /// The layer's name (`blocks.0.norm1`).
    pub layer: String,
    /// The norm kind's short name (`ln`, `bn`, `pn`, `un`).
    pub norm: &'static str,
    /// What was recorded (see the module docs).
    pub quantity: &'static str,
    /// Mean of the values.
    pub mean: f64,
    /// Population standard deviation of the values.
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of values summarised (channels, tokens, or 1 for a scalar).
    pub count: usize,
}

/// Which field of a [`TraceRecord`] a series reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// [`TraceRecord::mean`].
    Mean,
    /// [`TraceRecord::std`].
    Std,
    /// [`TraceRecord::min`].
    Min,
    /// [`TraceRecord::max`].
    Max,
}

impl TraceRecord {
    /// The chosen summary.
    pub fn get(&self, stat: Stat) -> f64 {
        match stat {
            Stat::Mean => self.mean,
            Stat::Std => self.std,
            Stat::Min => self.min,
            Stat::Max => self.max,
        }
    }

    /// The largest magnitude among the values: `max(|min|, |max|)` (for a gradient
    /// record, the largest `|g|`).
    pub fn abs_max(&self) -> f64 {
        self.min.abs().max(self.max.abs())
    }
}

struct Inner {
    active: AtomicBool,
    gradients: AtomicBool,
    step: AtomicU64,
    records: Mutex<Vec<TraceRecord>>,
}

/// A shared recorder of norm statistics (cloning shares it). See the module docs.
#[derive(Clone)]
pub struct Tracer(Arc<Inner>);

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("active", &self.is_active())
            .field("step", &self.step())
            .field("records", &self.len())
            .finish()
    }
}

impl Default for Tracer {
    fn default() -> Self {
        Tracer::new()
    }
}

/// CSV header of [`Tracer::to_csv`].
pub const CSV_HEADER: &str = "step,layer,norm,quantity,mean,std,min,max,count";

impl Tracer {
    /// An empty, active tracer at step 0.
    pub fn new() -> Tracer {
        Tracer(Arc::new(Inner {
            active: AtomicBool::new(true),
            gradients: AtomicBool::new(false),
            step: AtomicU64::new(0),
            records: Mutex::new(Vec::new()),
        }))
    }

    /// Tag the following records with `step`.
    pub fn set_step(&self, step: u64) {
        self.0.step.store(step, Ordering::Relaxed);
    }

    /// The current step.
    pub fn step(&self) -> u64 {
        self.0.step.load(Ordering::Relaxed)
    }

    /// Stop recording (attached layers then read nothing from the device).
    pub fn pause(&self) {
        self.0.active.store(false, Ordering::Relaxed);
    }

    /// Record again after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.0.active.store(true, Ordering::Relaxed);
    }

    /// Whether records are being taken.
    pub fn is_active(&self) -> bool {
        self.0.active.load(Ordering::Relaxed)
    }

    /// Also record, at every traced norm site, the statistics of the gradient reaching
    /// the norm's output (`grad_output`, through a hook on the output). Off by default.
    pub fn set_gradients(&self, on: bool) {
        self.0.gradients.store(on, Ordering::Relaxed);
    }

    /// Whether norm sites record `grad_output` ([`set_gradients`](Self::set_gradients)).
    pub fn traces_gradients(&self) -> bool {
        self.0.gradients.load(Ordering::Relaxed)
    }

    /// Trace any tensor under `name` (norm field `tensor`): the summary of its values
    /// now (`value`), and, when it tracks gradients, the summary of its gradient at
    /// backward time (`grad`, through a hook). Returns the hook's handle, or `None` when
    /// `t` tracks no gradient (evaluation, `no_grad`): then only `value` is recorded.
    /// While paused, nothing is read and no hook is registered.
    ///
    /// ```
    /// use unigrad_core::Tensor;
    /// use unigrad_nn::norm::trace::Tracer;
    /// # fn main() -> unigrad_core::Result<()> {
    /// let dev = unigrad_cpu::cpu();
    /// let tracer = Tracer::new();
    /// let x = Tensor::from_vec(vec![1.0f64, -2.0, 3.0], &[3], &dev)?.requires_grad();
    /// let h = x.mul_scalar(2.0)?; // any module output or intermediate
    /// tracer.watch("h", &h)?;
    /// h.sqr()?.sum_all()?.backward()?;
    /// let g = tracer.records().into_iter().find(|r| r.quantity == "grad").unwrap();
    /// assert_eq!(g.abs_max(), 12.0); // d/dh sum(h²) = 2h = [4, -8, 12]
    /// # Ok(()) }
    /// ```
    pub fn watch(&self, name: &str, t: &Tensor) -> Result<Option<HookHandle>> {
        let site = self.site(name);
        if !site.is_active() {
            return Ok(None);
        }
        site.record_tensor("tensor", "value", t)?;
        site.record_grad("tensor", "grad", t)
    }

    /// Trace the gradient of every parameter of `module` at each backward (`grad`, norm
    /// field `param`, layer = the parameter's name), through one hook per parameter.
    /// Remove the returned handles to stop.
    pub fn watch_params<M: crate::Module + ?Sized>(&self, module: &M) -> Result<Vec<HookHandle>> {
        let mut handles = Vec::new();
        for (name, p) in module.named_params() {
            if let Some(h) = self.site(&name).record_grad("param", "grad", &p)? {
                handles.push(h);
            }
        }
        Ok(handles)
    }

    /// A handle for the layer named `layer`, to attach to a norm.
    pub fn site(&self, layer: &str) -> TraceSite {
        TraceSite {
            tracer: self.clone(),
            layer: Arc::from(layer),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<TraceRecord>> {
        // a panic while holding the lock leaves a valid Vec; keep using it
        self.0.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop every record.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// A copy of every record, in recording order.
    pub fn records(&self) -> Vec<TraceRecord> {
        self.lock().clone()
    }

    /// The distinct layer names, in order of first appearance.
    pub fn layers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.lock().iter() {
            if !out.contains(&r.layer) {
                out.push(r.layer.clone());
            }
        }
        out
    }

    /// `(step, value)` of `quantity` at `layer`, in recording order.
    pub fn series(&self, layer: &str, quantity: &str, stat: Stat) -> Vec<(u64, f64)> {
        self.lock()
            .iter()
            .filter(|r| r.layer == layer && r.quantity == quantity)
            .map(|r| (r.step, r.get(stat)))
            .collect()
    }

    /// Every record as CSV ([`CSV_HEADER`] first), floats at full precision.
    pub fn to_csv(&self) -> String {
        let mut s = String::from(CSV_HEADER);
        s.push('\n');
        for r in self.lock().iter() {
            let layer = if r.layer.contains([',', '"', '\n']) {
                format!("\"{}\"", r.layer.replace('"', "\"\""))
            } else {
                r.layer.clone()
            };
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                r.step, layer, r.norm, r.quantity, r.mean, r.std, r.min, r.max, r.count
            ));
        }
        s
    }

    /// Write [`to_csv`](Self::to_csv) to `path` atomically (temporary file, then rename).
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::invalid("Tracer::write_csv", format!("{}: {e}", parent.display())))?;
        }
        crate::checkpoint::write_atomic(path, self.to_csv().as_bytes())
    }

    fn push(&self, r: TraceRecord) {
        self.lock().push(r);
    }
}

/// A tracer plus the name of one layer: what a norm holds while traced.
#[derive(Clone)]
pub struct TraceSite {
    tracer: Tracer,
    layer: Arc<str>,
}

impl fmt::Debug for TraceSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceSite({})", self.layer)
    }
}

/// Mean, population std, min, max of `v` (NaN-free summaries of an empty slice are NaN).
fn summarize(v: &[f64]) -> (f64, f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (mean, var.sqrt(), min, max)
}

impl TraceSite {
    /// The layer name.
    pub fn layer(&self) -> &str {
        &self.layer
    }

    /// The tracer.
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// Whether the tracer is recording (layers check this before reading anything).
    pub fn is_active(&self) -> bool {
        self.tracer.is_active()
    }

    /// Record the summary of `values` as `quantity` of this layer (a norm of kind `norm`).
    pub fn record_values(&self, norm: &'static str, quantity: &'static str, values: &[f64]) {
        let (mean, std, min, max) = summarize(values);
        self.tracer.push(TraceRecord {
            step: self.tracer.step(),
            layer: self.layer.to_string(),
            norm,
            quantity,
            mean,
            std,
            min,
            max,
            count: values.len(),
        });
    }

    /// Record one scalar.
    pub fn record_scalar(&self, norm: &'static str, quantity: &'static str, v: f64) {
        self.record_values(norm, quantity, &[v]);
    }

    /// Record the summary of all elements of `t` (copied to the host).
    pub fn record_tensor(&self, norm: &'static str, quantity: &'static str, t: &Tensor) -> Result<()> {
        self.record_values(norm, quantity, &t.to_vec_f64()?);
        Ok(())
    }

    /// At each backward that reaches `t`, record the summary of its gradient as
    /// `quantity` of this layer (a hook; see the module docs). `None` (and no hook) when
    /// `t` tracks no gradient. The hook records nothing while the tracer is paused.
    pub fn record_grad(&self, norm: &'static str, quantity: &'static str, t: &Tensor) -> Result<Option<HookHandle>> {
        if !t.tracks_grad() {
            return Ok(None);
        }
        let site = self.clone();
        t.register_hook(move |g| {
            if site.is_active() {
                site.record_tensor(norm, quantity, g)?;
            }
            Ok(None)
        })
        .map(Some)
    }

    /// Record `fluctuation`: per channel `|batch / running_before − 1|`.
    pub fn record_fluctuation(&self, norm: &'static str, batch: &[f64], running_before: &[f64]) {
        let v: Vec<f64> = batch
            .iter()
            .zip(running_before)
            .map(|(b, r)| (b / r - 1.0).abs())
            .collect();
        self.record_values(norm, "fluctuation", &v);
    }
}

/// A norm's output `y`: with a site attached, active and tracing gradients
/// ([`Tracer::set_gradients`]), record `grad_output` at backward time.
pub(crate) fn record_output_grad(site: Option<&TraceSite>, norm: &'static str, y: &Tensor) -> Result<()> {
    match site {
        Some(s) if s.is_active() && s.tracer.traces_gradients() => s.record_grad(norm, "grad_output", y).map(|_| ()),
        _ => Ok(()),
    }
}

/// LayerNorm's record: each token's mean and variance over channels, summarised over the
/// tokens of `x [.., C]`.
pub(crate) fn record_layer_norm(site: &TraceSite, x: &Tensor) -> Result<()> {
    if !site.is_active() {
        return Ok(());
    }
    let (mean, var) = moments_last(x)?;
    site.record_tensor("ln", "token_mean", &mean)?;
    site.record_tensor("ln", "token_var", &var)
}

/// BatchNorm's record of one training step: batch mean/variance (`[1, C]` or `[C]`), the
/// running variance before the update, and the running statistics after it.
pub(crate) fn record_batch_norm(
    site: &TraceSite,
    mean: &Tensor,
    var: &Tensor,
    running_var_before: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
) -> Result<()> {
    if !site.is_active() {
        return Ok(());
    }
    let v = var.to_vec_f64()?;
    site.record_tensor("bn", "batch_mean", mean)?;
    site.record_values("bn", "batch_stat", &v);
    site.record_tensor("bn", "running_mean", running_mean)?;
    site.record_tensor("bn", "running_stat", running_var)?;
    site.record_fluctuation("bn", &v, &running_var_before.to_vec_f64()?);
    Ok(())
}
