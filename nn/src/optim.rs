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

/// Saved optimizer state: the update count and named state tensors
/// (`exp_avg.<param>`, `exp_avg_sq.<param>`, `momentum_buffer.<param>`).
#[derive(Clone, Debug)]
pub struct OptimizerState {
    /// Optimizer name (`sgd`, `adam`, `adamw`); loading checks it.
    pub kind: String,
    /// Updates done.
    pub step: u64,
    /// Current learning rate.
    pub lr: f64,
    /// Named state tensors.
    pub tensors: Vec<(String, Tensor)>,
}

/// What the training loop needs from an optimizer.
pub trait Optimizer {
    /// Apply one update from the parameters' accumulated gradients. Parameters without
    /// a gradient are skipped.
    fn step(&mut self) -> Result<()>;
    /// Current learning rate.
    fn lr(&self) -> f64;
    /// Set the learning rate (schedules call this before each step).
    fn set_lr(&mut self, lr: f64);
    /// Updates done so far.
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
    for g in groups {
        if g.weight_decay.is_nan() || g.weight_decay < 0.0 {
            return Err(Error::invalid(
                op,
                format!("weight decay {} must be >= 0", g.weight_decay),
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

/// Per-parameter state slots, indexed `[group][param]`.
type Slots = Vec<Vec<Option<Tensor>>>;

fn empty_slots(groups: &[ParamGroup]) -> Slots {
    groups.iter().map(|g| vec![None; g.params.len()]).collect()
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
    steps: u64,
}

impl Sgd {
    /// SGD over `groups` with rate `lr`, `momentum ∈ [0, 1)` and optional Nesterov.
    pub fn new(groups: Vec<ParamGroup>, lr: f64, momentum: f64, nesterov: bool) -> Result<Sgd> {
        check_groups("Sgd", &groups)?;
        if !(0.0..1.0).contains(&momentum) {
            return Err(Error::invalid("Sgd", format!("momentum {momentum} is not in [0, 1)")));
        }
        if nesterov && momentum == 0.0 {
            return Err(Error::invalid("Sgd", "Nesterov momentum needs momentum > 0"));
        }
        Ok(Sgd {
            bufs: empty_slots(&groups),
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
            for (g, bufs) in self.groups.iter().zip(self.bufs.iter_mut()) {
                for ((_, p), buf) in g.params.iter().zip(bufs.iter_mut()) {
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
                }
            }
            self.steps += 1;
            Ok(())
        })
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
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
            lr: self.lr,
            tensors,
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        check_kind("Sgd::load_state", "sgd", &["momentum_buffer"], state)?;
        self.bufs = import("Sgd::load_state", "momentum_buffer", &self.groups, state)?;
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
    steps: u64,
}

impl Adam {
    /// An optimizer over `groups`. For AdamW with PyTorch's default decay of 0.01 on
    /// everything, pass one group with `weight_decay = 0.01`.
    pub fn new(groups: Vec<ParamGroup>, cfg: AdamConfig) -> Result<Adam> {
        check_groups("Adam", &groups)?;
        let ok = |b: f64| (0.0..1.0).contains(&b);
        if !ok(cfg.beta1) || !ok(cfg.beta2) || cfg.eps.is_nan() || cfg.eps < 0.0 {
            return Err(Error::invalid(
                "Adam",
                format!(
                    "betas ({}, {}) must be in [0, 1) and eps {} >= 0",
                    cfg.beta1, cfg.beta2, cfg.eps
                ),
            ));
        }
        Ok(Adam {
            m: empty_slots(&groups),
            v: empty_slots(&groups),
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
        let t = self.steps + 1;
        no_grad(|| {
            for ((g, ms), vs) in self.groups.iter().zip(self.m.iter_mut()).zip(self.v.iter_mut()) {
                let wd = g.weight_decay;
                for (((_, p), m), v) in g.params.iter().zip(ms.iter_mut()).zip(vs.iter_mut()) {
                    let Some(grad) = p.grad() else { continue };
                    // one fused pass per parameter (see `AdamStep` for the update)
                    let h = AdamStep::at_step(t, c.lr, (c.beta1, c.beta2), c.eps, wd, c.decoupled);
                    let (new_p, new_m, new_v) =
                        unigrad_core::ops::optim::adam_update(p, &grad, m.as_ref(), v.as_ref(), &h)?;
                    if c.lr != 0.0 {
                        p.assign(&new_p)?;
                    }
                    *m = Some(new_m);
                    *v = Some(new_v);
                }
            }
            self.steps = t;
            Ok(())
        })
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
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
            lr: self.cfg.lr,
            tensors,
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        check_kind("Adam::load_state", self.name(), &["exp_avg", "exp_avg_sq"], state)?;
        let m = import("Adam::load_state", "exp_avg", &self.groups, state)?;
        let v = import("Adam::load_state", "exp_avg_sq", &self.groups, state)?;
        for (gi, g) in self.groups.iter().enumerate() {
            for (pi, (name, _)) in g.params.iter().enumerate() {
                if m[gi][pi].is_some() != v[gi][pi].is_some() {
                    return Err(Error::invalid(
                        "Adam::load_state",
                        format!("`{name}` has only one of exp_avg and exp_avg_sq"),
                    ));
                }
            }
        }
        self.m = m;
        self.v = v;
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
