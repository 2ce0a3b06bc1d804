//! Optimizers (SGD with momentum / Nesterov, Adam, AdamW), parameter groups and
//! gradient-norm clipping.
//!
//! Updates run under [`no_grad`] and write parameters with [`Tensor::assign`], which
//! swaps the parameter's storage for the freshly computed one: the parameter keeps its
//! identity (and so its name, its place in the model and its grad slot). The update
//! rules follow PyTorch's `torch.optim` exactly (including how weight decay enters),
//! so hyperparameters transfer.
//!
//! Parameters are given as [`ParamGroup`]s, each with its own weight decay; the
//! usual split (decay on weight matrices, none on biases, norm scales and other
//! vectors) is [`decay_groups`]. Optimizer state can be saved and restored by
//! parameter name ([`Optimizer::state`], [`Optimizer::load_state`]) for `--resume`.
//!
//! # Steps are counted per parameter
//!
//! As in PyTorch, each parameter counts its own updates, and Adam's bias correction uses
//! that count: a [`Optimizer::step`] in which a parameter has no gradient (a frozen layer,
//! a branch the batch did not use, a call before any backward) does not advance it. A
//! single shared counter would give the next real update of such a parameter the bias
//! correction of a later step, and so a wrongly scaled update. [`Optimizer::steps`] still
//! counts the calls, for schedules and logs.
//!
//! # Hyperparameters are checked
//!
//! A learning rate that is NaN, infinite or negative, a negative or non-finite weight
//! decay, betas outside `[0, 1)` or an `eps` that is negative or not finite are errors
//! naming the optimizer and the value — at construction, in [`Optimizer::set_lr`] and in
//! [`Optimizer::load_state`] — because one update with any of them turns every weight
//! into NaN (or sends it the wrong way) without another error.

use std::collections::HashMap;
use unigrad_core::{no_grad, AdamStep, Error, Result, Tensor};

/// Parameters sharing optimizer settings.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    /// Named parameters.
    pub params: Vec<(String, Tensor)>,
    /// Weight decay of this group (L2 for SGD/Adam, decoupled for AdamW).
    pub weight_decay: f64,
}

impl ParamGroup {
    /// A group with the given decay.
    pub fn new(params: Vec<(String, Tensor)>, weight_decay: f64) -> ParamGroup {
        ParamGroup { params, weight_decay }
    }
}

/// Split named parameters into a decayed group (rank ≥ 2: weight matrices, embedding
/// tables) and an undecayed one (rank < 2: biases and norm parameters).
pub fn decay_groups(named: Vec<(String, Tensor)>, weight_decay: f64) -> Vec<ParamGroup> {
    let (decay, no_decay): (Vec<_>, Vec<_>) = named.into_iter().partition(|(_, t)| t.rank() >= 2);
    vec![ParamGroup::new(decay, weight_decay), ParamGroup::new(no_decay, 0.0)]
}

/// Saved optimizer state: the call count, each parameter's update count and named state
/// tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`, `momentum_buffer.<param>`).
#[derive(Clone, Debug)]
pub struct OptimizerState {
    /// Optimizer name (`sgd`, `adam`, `adamw`); loading checks it.
    pub kind: String,
    /// Calls of [`Optimizer::step`] ([`Optimizer::steps`]).
    pub step: u64,
    /// Updates of each parameter (by name) that has had any; a parameter not listed has
    /// had none. Adam's bias correction uses these counts.
    pub param_steps: Vec<(String, u64)>,
    /// Current learning rate.
    pub lr: f64,
    /// Named state tensors.
    pub tensors: Vec<(String, Tensor)>,
}

/// What the training loop needs from an optimizer.
pub trait Optimizer {
    /// Apply one update from the parameters' accumulated gradients. Parameters without
    /// a gradient are skipped, and their update counts do not advance.
    fn step(&mut self) -> Result<()>;
    /// Current learning rate.
    fn lr(&self) -> f64;
    /// Set the learning rate (schedules call this before each step). A rate that is not
    /// finite or is negative is an error naming the optimizer and the value, and leaves
    /// the rate unchanged.
    fn set_lr(&mut self, lr: f64) -> Result<()>;
    /// Calls of [`step`](Self::step) so far (each parameter's own update count, which
    /// Adam's bias correction uses, is in [`state`](Self::state)).
    fn steps(&self) -> u64;
    /// All parameters of all groups.
    fn params(&self) -> Vec<Tensor>;
    /// Clear every parameter's gradient.
    fn zero_grad(&self) {
        for p in self.params() {
            p.zero_grad();
        }
    }
    /// Snapshot of the state for checkpoints.
    fn state(&self) -> OptimizerState;
    /// Restore a snapshot. Validates everything first; on error nothing changes.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

fn check_groups(op: &'static str, groups: &[ParamGroup]) -> Result<()> {
    let mut seen = HashMap::new();
    for (gi, g) in groups.iter().enumerate() {
        if !(g.weight_decay.is_finite() && g.weight_decay >= 0.0) {
            return Err(Error::invalid(
                op,
                format!(
                    "weight decay {} of parameter group {gi} must be finite and >= 0",
                    g.weight_decay
                ),
            ));
        }
        for (name, p) in &g.params {
            if !p.is_grad_leaf() {
                return Err(Error::invalid(op, format!("`{name}` is not a parameter (grad leaf)")));
            }
            if seen.insert(p.id(), name.clone()).is_some() {
                return Err(Error::invalid(op, format!("parameter `{name}` appears twice")));
            }
        }
    }
    Ok(())
}

/// A learning rate must be finite and >= 0.
fn check_lr(op: &'static str, lr: f64) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("learning rate {lr} must be finite and >= 0"),
        ))
    }
}

/// Per-parameter state slots, indexed `[group][param]`.
type Slots = Vec<Vec<Option<Tensor>>>;

fn empty_slots(groups: &[ParamGroup]) -> Slots {
    groups.iter().map(|g| vec![None; g.params.len()]).collect()
}

/// Per-parameter update counts, indexed `[group][param]`.
type Counts = Vec<Vec<u64>>;

fn zero_counts(groups: &[ParamGroup]) -> Counts {
    groups.iter().map(|g| vec![0; g.params.len()]).collect()
}

/// The non-zero counts by parameter name (for [`OptimizerState::param_steps`]).
fn export_counts(groups: &[ParamGroup], counts: &Counts) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (g, c) in groups.iter().zip(counts) {
        for ((name, _), &n) in g.params.iter().zip(c) {
            if n > 0 {
                out.push((name.clone(), n));
            }
        }
    }
    out
}

/// Counts from [`OptimizerState::param_steps`]; every name must be a parameter, once.
fn import_counts(op: &'static str, groups: &[ParamGroup], state: &OptimizerState) -> Result<Counts> {
    let mut counts = zero_counts(groups);
    let mut index = HashMap::new();
    for (gi, g) in groups.iter().enumerate() {
        for (pi, (name, _)) in g.params.iter().enumerate() {
            index.insert(name.as_str(), (gi, pi));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (name, n) in &state.param_steps {
        let Some(&(gi, pi)) = index.get(name.as_str()) else {
            return Err(Error::invalid(
                op,
                format!("step count of `{name}` names no parameter of this optimizer"),
            ));
        };
        if !seen.insert(name.as_str()) {
            return Err(Error::invalid(op, format!("two step counts for `{name}`")));
        }
        counts[gi][pi] = *n;
    }
    Ok(counts)
}

fn export(prefix: &str, groups: &[ParamGroup], slots: &Slots, out: &mut Vec<(String, Tensor)>) {
    for (g, s) in groups.iter().zip(slots) {
        for ((name, _), t) in g.params.iter().zip(s) {
            if let Some(t) = t {
                out.push((format!("{prefix}.{name}"), t.clone()));
            }
        }
    }
}

/// Validate and build new slots from `state` for `prefix`; names must be known params.
fn import(op: &'static str, prefix: &str, groups: &[ParamGroup], state: &OptimizerState) -> Result<Slots> {
    let mut slots = empty_slots(groups);
    let mut index = HashMap::new();
    for (gi, g) in groups.iter().enumerate() {
        for (pi, (name, _)) in g.params.iter().enumerate() {
            index.insert(format!("{prefix}.{name}"), (gi, pi));
        }
    }
    for (name, t) in &state.tensors {
        let Some(&(gi, pi)) = index.get(name) else {
            if name.starts_with(&format!("{prefix}.")) {
                return Err(Error::invalid(
                    op,
                    format!("state `{name}` names no parameter of this optimizer"),
                ));
            }
            continue;
        };
        let p = &groups[gi].params[pi].1;
        if t.shape() != p.shape() || t.dtype() != p.dtype() {
            return Err(Error::invalid(
                op,
                format!(
                    "state `{name}` is {:?} {} but the parameter is {:?} {}",
                    t.shape(),
                    t.dtype(),
                    p.shape(),
                    p.dtype()
                ),
            ));
        }
        slots[gi][pi] = Some(t.to_device(p.device())?.detach());
    }
    Ok(slots)
}

/// The state must come from the same optimizer kind and hold only known state names.
fn check_kind(op: &'static str, want: &str, prefixes: &[&str], state: &OptimizerState) -> Result<()> {
    if state.kind != want {
        return Err(Error::invalid(
            op,
            format!("state was saved by `{}`, not `{want}`", state.kind),
        ));
    }
    for (name, _) in &state.tensors {
        if !prefixes.iter().any(|p| name.starts_with(&format!("{p}."))) {
            return Err(Error::invalid(op, format!("unexpected state tensor `{name}`")));
        }
    }
    Ok(())
}

/// Stochastic gradient descent with optional momentum, dampening-free, and Nesterov
/// momentum (PyTorch's `SGD`). Weight decay is L2 (added to the gradient).
#[derive(Debug)]
pub struct Sgd {
    groups: Vec<ParamGroup>,
    lr: f64,
    momentum: f64,
    nesterov: bool,
    bufs: Slots,
    /// Updates of each parameter.
    counts: Counts,
    /// Calls of `step`.
    steps: u64,
}

impl Sgd {
    /// SGD over `groups` with rate `lr` (finite, >= 0), `momentum ∈ [0, 1)` and optional
    /// Nesterov.
    pub fn new(groups: Vec<ParamGroup>, lr: f64, momentum: f64, nesterov: bool) -> Result<Sgd> {
        check_groups("Sgd", &groups)?;
        check_lr("Sgd", lr)?;
        if !(0.0..1.0).contains(&momentum) {
            return Err(Error::invalid("Sgd", format!("momentum {momentum} is not in [0, 1)")));
        }
        if nesterov && momentum == 0.0 {
            return Err(Error::invalid("Sgd", "Nesterov momentum needs momentum > 0"));
        }
        Ok(Sgd {
            bufs: empty_slots(&groups),
            counts: zero_counts(&groups),
            groups,
            lr,
            momentum,
            nesterov,
            steps: 0,
        })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        no_grad(|| {
            for ((g, bufs), counts) in self.groups.iter().zip(self.bufs.iter_mut()).zip(self.counts.iter_mut()) {
                for (((_, p), buf), count) in g.params.iter().zip(bufs.iter_mut()).zip(counts.iter_mut()) {
                    let Some(mut d) = p.grad() else { continue };
                    if g.weight_decay != 0.0 {
                        d = d.add(&p.mul_scalar(g.weight_decay)?)?;
                    }
                    if self.momentum != 0.0 {
                        let b = match buf.take() {
                            Some(b) => b.mul_scalar(self.momentum)?.add(&d)?,
                            None => d.contiguous()?,
                        };
                        d = if self.nesterov {
                            d.add(&b.mul_scalar(self.momentum)?)?
                        } else {
                            b.clone()
                        };
                        *buf = Some(b);
                    }
                    p.assign(&p.sub(&d.mul_scalar(self.lr)?)?)?;
                    *count += 1;
                }
            }
            self.steps += 1;
            Ok(())
        })
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) -> Result<()> {
        check_lr("Sgd::set_lr", lr)?;
        self.lr = lr;
        Ok(())
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn params(&self) -> Vec<Tensor> {
        self.groups
            .iter()
            .flat_map(|g| g.params.iter().map(|(_, p)| p.clone()))
            .collect()
    }

    fn state(&self) -> OptimizerState {
        let mut tensors = Vec::new();
        export("momentum_buffer", &self.groups, &self.bufs, &mut tensors);
        OptimizerState {
            kind: "sgd".into(),
            step: self.steps,
            param_steps: export_counts(&self.groups, &self.counts),
            lr: self.lr,
            tensors,
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        check_kind("Sgd::load_state", "sgd", &["momentum_buffer"], state)?;
        check_lr("Sgd::load_state", state.lr)?;
        let bufs = import("Sgd::load_state", "momentum_buffer", &self.groups, state)?;
        self.counts = import_counts("Sgd::load_state", &self.groups, state)?;
        self.bufs = bufs;
        self.steps = state.step;
        self.lr = state.lr;
        Ok(())
    }
}

/// Settings of [`Adam`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// `true`: AdamW's decoupled decay `p ← p·(1 − lr·wd)` (Loshchilov & Hutter 2019);
    /// `false`: Adam's L2 term added to the gradient.
    pub decoupled: bool,
}

impl AdamConfig {
    /// Adam with PyTorch's defaults (`betas = (0.9, 0.999)`, `eps = 1e-8`).
    pub fn adam(lr: f64) -> AdamConfig {
        AdamConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            decoupled: false,
        }
    }

    /// AdamW with PyTorch's defaults.
    pub fn adamw(lr: f64) -> AdamConfig {
        AdamConfig {
            decoupled: true,
            ..AdamConfig::adam(lr)
        }
    }
}

/// Adam / AdamW (PyTorch's `Adam` and `AdamW`, without amsgrad).
#[derive(Debug)]
pub struct Adam {
    groups: Vec<ParamGroup>,
    cfg: AdamConfig,
    m: Slots,
    v: Slots,
    /// Updates of each parameter: the `t` of its bias correction.
    counts: Counts,
    /// Calls of `step`.
    steps: u64,
}

impl Adam {
    /// An optimizer over `groups`. For AdamW with PyTorch's default decay of 0.01 on
    /// everything, pass one group with `weight_decay = 0.01`.
    ///
    /// The learning rate must be finite and >= 0, both betas in `[0, 1)`, `eps` finite
    /// and >= 0, and every group's weight decay finite and >= 0; the error names `Adam`
    /// or `AdamW` and the value.
    pub fn new(groups: Vec<ParamGroup>, cfg: AdamConfig) -> Result<Adam> {
        let op = if cfg.decoupled { "AdamW" } else { "Adam" };
        check_groups(op, &groups)?;
        check_lr(op, cfg.lr)?;
        for (name, b) in [("beta1", cfg.beta1), ("beta2", cfg.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::invalid(op, format!("{name} {b} is not in [0, 1)")));
            }
        }
        if !(cfg.eps.is_finite() && cfg.eps >= 0.0) {
            return Err(Error::invalid(op, format!("eps {} must be finite and >= 0", cfg.eps)));
        }
        Ok(Adam {
            m: empty_slots(&groups),
            v: empty_slots(&groups),
            counts: zero_counts(&groups),
            groups,
            cfg,
            steps: 0,
        })
    }

    /// AdamW (`betas = (0.9, 0.999)`, `eps = 1e-8`) over `groups`.
    pub fn adamw(groups: Vec<ParamGroup>, lr: f64) -> Result<Adam> {
        Adam::new(groups, AdamConfig::adamw(lr))
    }

    /// The settings.
    pub fn config(&self) -> &AdamConfig {
        &self.cfg
    }

    fn name(&self) -> &'static str {
        if self.cfg.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self) -> Result<()> {
        let _p = crate::profile::scope("optimizer.step", None);
        let c = self.cfg;
        no_grad(|| {
            let slots = self.m.iter_mut().zip(self.v.iter_mut()).zip(self.counts.iter_mut());
            for (g, ((ms, vs), counts)) in self.groups.iter().zip(slots) {
                let wd = g.weight_decay;
                let slots = ms.iter_mut().zip(vs.iter_mut()).zip(counts.iter_mut());
                for ((_, p), ((m, v), count)) in g.params.iter().zip(slots) {
                    let Some(grad) = p.grad() else { continue };
                    // this parameter's own update number (PyTorch's per-parameter `step`)
                    let t = *count + 1;
                    // one fused pass per parameter (see `AdamStep` for the update)
                    let h = AdamStep::at_step(t, c.lr, (c.beta1, c.beta2), c.eps, wd, c.decoupled);
                    let (new_p, new_m, new_v) =
                        unigrad_core::ops::optim::adam_update(p, &grad, m.as_ref(), v.as_ref(), &h)?;
                    if c.lr != 0.0 {
                        p.assign(&new_p)?;
                    }
                    *m = Some(new_m);
                    *v = Some(new_v);
                    *count = t;
                }
            }
            self.steps += 1;
            Ok(())
        })
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) -> Result<()> {
        check_lr(
            if self.cfg.decoupled {
                "AdamW::set_lr"
            } else {
                "Adam::set_lr"
            },
            lr,
        )?;
        self.cfg.lr = lr;
        Ok(())
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn params(&self) -> Vec<Tensor> {
        self.groups
            .iter()
            .flat_map(|g| g.params.iter().map(|(_, p)| p.clone()))
            .collect()
    }

    fn state(&self) -> OptimizerState {
        let mut tensors = Vec::new();
        export("exp_avg", &self.groups, &self.m, &mut tensors);
        export("exp_avg_sq", &self.groups, &self.v, &mut tensors);
        OptimizerState {
            kind: self.name().into(),
            step: self.steps,
            param_steps: export_counts(&self.groups, &self.counts),
            lr: self.cfg.lr,
            tensors,
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        check_kind("Adam::load_state", self.name(), &["exp_avg", "exp_avg_sq"], state)?;
        check_lr("Adam::load_state", state.lr)?;
        let m = import("Adam::load_state", "exp_avg", &self.groups, state)?;
        let v = import("Adam::load_state", "exp_avg_sq", &self.groups, state)?;
        let counts = import_counts("Adam::load_state", &self.groups, state)?;
        for (gi, g) in self.groups.iter().enumerate() {
            for (pi, (name, _)) in g.params.iter().enumerate() {
                if m[gi][pi].is_some() != v[gi][pi].is_some() {
                    return Err(Error::invalid(
                        "Adam::load_state",
                        format!("`{name}` has only one of exp_avg and exp_avg_sq"),
                    ));
                }
                // the moments exist exactly when the parameter has been updated
                if m[gi][pi].is_some() != (counts[gi][pi] > 0) {
                    return Err(Error::invalid(
                        "Adam::load_state",
                        format!(
                            "`{name}` has {} moments but a step count of {}",
                            if m[gi][pi].is_some() { "saved" } else { "no" },
                            counts[gi][pi]
                        ),
                    ));
                }
            }
        }
        self.m = m;
        self.v = v;
        self.counts = counts;
        self.steps = state.step;
        self.cfg.lr = state.lr;
        Ok(())
    }
}

/// Scale gradients so their global L2 norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`, with its `1e-6` guard). Returns the norm before clipping.
/// Parameters without a gradient are ignored.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> Result<f64> {
    no_grad(|| {
        let grads: Vec<(usize, Tensor)> = params
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.grad().map(|g| (i, g)))
            .collect();
        let mut total: Option<Tensor> = None;
        for (_, g) in &grads {
            let s = g.sqr()?.sum_all()?;
            total = Some(match total {
                Some(t) => t.add(&s.to_dtype(t.dtype())?)?,
                None => s,
            });
        }
        let Some(total) = total else { return Ok(0.0) };
        let norm = total.to_scalar()?.sqrt();
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for (i, g) in &grads {
                params[*i].set_grad(Some(g.mul_scalar(coef)?))?;
            }
        }
        Ok(norm)
    })
}
