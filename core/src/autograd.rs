//! Tape-based reverse-mode autodiff, in the spirit of micrograd.
//!
//! Every op that runs while gradients are enabled and has an input that tracks
//! gradients records a `Node`: its name, its inputs and a closure that maps the
//! output's gradient to the inputs' gradients. `backward` orders the recorded nodes
//! topologically, runs the closures in reverse (with recording switched off), and
//! accumulates into leaves. Each node's closure and inputs are *taken* as it runs,
//! so the graph is released by the backward pass itself.
//!
//! Higher-order gradients: with [`BackwardOptions::create_graph`] (or
//! [`grad`]`(.., create_graph = true)`) the pass keeps the graph and runs the
//! closures with recording *on*, so the gradients are recorded tensors whose own
//! backward reaches back into the first graph (`d/da` of `exp(exp(a))`'s gradient
//! needs `exp(a)`'s node again). Every closure is therefore written in recorded ops
//! of its attached inputs whenever [`is_grad_enabled`] says so; an op that cannot be
//! differentiated twice returns its gradient through [`not_twice_differentiable`],
//! whose node errors at the second backward instead of giving a wrong value.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Maps the gradient of an op's output to one optional gradient per input.
///
/// A closure may run more than once (a pass with `retain_graph`, or the second pass
/// of a higher-order gradient through the same node), so it is `Fn`: it reads what it
/// captured and never consumes it. When [`is_grad_enabled`] is true inside it, the
/// engine runs with `create_graph` and the gradient it returns must itself be
/// differentiable: computed with recorded tensor ops from the op's *inputs* captured
/// attached (`x.clone()`, never the op's own output attached, which is a cycle).
pub type BackwardFn = Box<dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

type SharedBackward = Arc<dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// One recorded op.
pub(crate) struct Node {
    pub(crate) op: String,
    state: Mutex<Option<(Vec<Tensor>, SharedBackward)>>,
}

impl Drop for Node {
    /// Release a graph that backward never consumed iteratively. Left to the
    /// compiler, each node's drop would drop its inputs' nodes recursively, and a
    /// long chain (a loss summed over many steps without `backward` or `no_grad`)
    /// overflows the thread's stack and aborts the process.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        let mut pending: Vec<Tensor> = state.map(|(inputs, _)| inputs).unwrap_or_default();
        while let Some(t) = pending.pop() {
            // Only the last handle to a tensor releases its node; others just decrement.
            let Ok(inner) = Arc::try_unwrap(t.0) else { continue };
            let Some(node) = inner.node else { continue };
            if let Ok(mut node) = Arc::try_unwrap(node) {
                let state = node.state.get_mut().unwrap_or_else(|e| e.into_inner()).take();
                pending.extend(state.map(|(inputs, _)| inputs).unwrap_or_default());
            } // `node` drops here with no state left: no recursion
        }
    }
}

thread_local! {
    static NO_GRAD_DEPTH: Cell<usize> = const { Cell::new(0) };
}
static ANOMALY: AtomicBool = AtomicBool::new(false);

/// True unless inside [`no_grad`].
pub fn is_grad_enabled() -> bool {
    NO_GRAD_DEPTH.with(|d| d.get() == 0)
}

/// Run `f` without recording any op (inference, optimizer updates, metrics).
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _g = NoGradGuard::new();
    f()
}

/// RAII form of [`no_grad`]: recording is off while the guard lives.
pub struct NoGradGuard(());

impl NoGradGuard {
    /// Switch recording off until the guard is dropped.
    pub fn new() -> NoGradGuard {
        NO_GRAD_DEPTH.with(|d| d.set(d.get() + 1));
        NoGradGuard(())
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        NO_GRAD_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Turn anomaly detection on or off (process-wide). When on, every recorded op's
/// forward output and every gradient produced in backward is checked for NaN/Inf,
/// and the first offender is returned as [`Error::Anomaly`] naming the op. Slow:
/// each check copies the tensor to the host.
pub fn set_anomaly_detection(on: bool) {
    ANOMALY.store(on, Ordering::Relaxed);
}

/// Whether anomaly detection is on.
pub fn anomaly_detection() -> bool {
    ANOMALY.load(Ordering::Relaxed)
}

fn check_finite(t: &Tensor, op: &str, phase: &'static str) -> Result<()> {
    if !t.dtype().is_float() {
        return Ok(());
    }
    let v = t.to_vec_f64()?;
    let bad = v.iter().filter(|x| !x.is_finite()).count();
    if bad > 0 {
        let nan = v.iter().filter(|x| x.is_nan()).count();
        return Err(Error::Anomaly {
            op: op.to_string(),
            phase,
            detail: format!(
                "{bad} of {} values non-finite ({nan} NaN), shape {:?}",
                v.len(),
                t.shape()
            ),
        });
    }
    Ok(())
}

/// Record `out = op(inputs)` with its backward closure. If recording is off, no
/// input tracks gradients, or `out` is not floating point, `out` is returned
/// untouched and `backward` is dropped: as in PyTorch, only floating-point tensors
/// take part in differentiation, so an integer result (an index computed by a custom
/// op, say) is never differentiable. This is the one entry point for every
/// differentiable op, built-in or custom.
pub fn record(op: &str, out: Tensor, inputs: &[&Tensor], backward: BackwardFn) -> Result<Tensor> {
    // Not while recording is off: inside backward the gradient ops would otherwise be
    // blamed ("forward of div") before the node's own backward check names the culprit.
    if anomaly_detection() && is_grad_enabled() {
        check_finite(&out, op, "forward")?;
    }
    if !is_grad_enabled() || !out.dtype().is_float() || !inputs.iter().any(|t| t.tracks_grad()) {
        return Ok(out);
    }
    let node = Node {
        op: op.to_string(),
        state: Mutex::new(Some((
            inputs.iter().map(|t| (*t).clone()).collect(),
            Arc::from(backward),
        ))),
    };
    Ok(out.with_node(Arc::new(node)))
}

/// Options of a backward pass ([`Tensor::backward_with_options`], [`grad`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackwardOptions {
    /// Keep the graph after the pass, so another backward may run through it. Without
    /// it each node's backward state is released as the pass consumes it, and a second
    /// pass through the same node is [`Error::GraphReleased`].
    pub retain_graph: bool,
    /// Record the backward pass itself (implies `retain_graph`), so that the
    /// gradients it produces are tensors with history that can be differentiated
    /// again: gradient penalties, Hessian-vector products, double-backward checks.
    /// The backward closures then run with recording on, so
    /// [`is_grad_enabled`] tells them to compute with recorded ops.
    pub create_graph: bool,
}

impl BackwardOptions {
    /// `create_graph` (and therefore `retain_graph`) on.
    pub fn create_graph() -> BackwardOptions {
        BackwardOptions {
            retain_graph: true,
            create_graph: true,
        }
    }

    /// `retain_graph` on, `create_graph` off.
    pub fn retain_graph() -> BackwardOptions {
        BackwardOptions {
            retain_graph: true,
            create_graph: false,
        }
    }

    fn retains(&self) -> bool {
        self.retain_graph || self.create_graph
    }
}

/// RAII guard that switches recording on while it lives, even inside [`no_grad`]
/// (PyTorch's `enable_grad`); the previous state comes back on drop.
pub struct EnableGradGuard {
    saved: usize,
}

impl EnableGradGuard {
    /// Switch recording on until the guard is dropped.
    pub fn new() -> EnableGradGuard {
        let saved = NO_GRAD_DEPTH.with(|d| d.replace(0));
        EnableGradGuard { saved }
    }
}

impl Default for EnableGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for EnableGradGuard {
    fn drop(&mut self) {
        NO_GRAD_DEPTH.with(|d| d.set(self.saved));
    }
}

/// Run `f` with recording on, even inside [`no_grad`] (PyTorch's `enable_grad`).
pub fn enable_grad<T>(f: impl FnOnce() -> T) -> T {
    let _g = EnableGradGuard::new();
    f()
}

/// `grads` (first-order gradients of op `op`, computed without recording, e.g. by a
/// custom op's hand-written backward) as recorded tensors that depend on `inputs`
/// (the op's attached inputs and its upstream gradient) through a node whose backward
/// is an error naming `op`: the values are right for first-order use, and a second
/// backward that reaches them fails instead of silently treating them as constants.
/// Returns `grads` unchanged when recording is off.
pub fn not_twice_differentiable(
    op: &str,
    grads: Vec<Option<Tensor>>,
    inputs: &[&Tensor],
) -> Result<Vec<Option<Tensor>>> {
    if !is_grad_enabled() {
        return Ok(grads);
    }
    let name = format!("{op} (first-order backward)");
    grads
        .into_iter()
        .map(|g| {
            let Some(g) = g else { return Ok(None) };
            let op_name = op.to_string();
            record(
                &name,
                g.detach(),
                inputs,
                Box::new(move |_| {
                    Err(Error::invalid(
                        "backward",
                        format!(
                            "op {op_name} is not twice differentiable: its backward is not written in recorded ops, \
                             so the gradient of its gradient is not available (a create_graph pass went through it)"
                        ),
                    ))
                }),
            )
            .map(Some)
        })
        .collect()
}

/// Reverse pass from `root` seeded with `seed` (same shape as `root`), accumulating
/// into grad leaves.
pub(crate) fn backward(root: &Tensor, seed: Tensor, opts: BackwardOptions) -> Result<()> {
    run(&[(root.clone(), seed)], opts, None).map(|_| ())
}

/// Gradients of `outputs` (weighted by `grad_outputs`, one per output, each of its
/// output's shape) with respect to `inputs`, in the shape of PyTorch's
/// `torch.autograd.grad`: the result has one entry per input, `None` where no path
/// leads from the input to any output. Inputs may be leaves or intermediate results.
/// Nothing is accumulated into any leaf's [`Tensor::grad`].
///
/// With `create_graph` the returned gradients are recorded and can be differentiated
/// again (the graph is kept; see [`BackwardOptions::create_graph`]); without it they
/// have no history and the graph's nodes on the way are released.
pub fn grad(
    outputs: &[&Tensor],
    grad_outputs: &[&Tensor],
    inputs: &[&Tensor],
    create_graph: bool,
) -> Result<Vec<Option<Tensor>>> {
    if outputs.len() != grad_outputs.len() {
        return Err(Error::invalid(
            "grad",
            format!("{} outputs but {} grad_outputs", outputs.len(), grad_outputs.len()),
        ));
    }
    let mut roots = Vec::with_capacity(outputs.len());
    for (o, g) in outputs.iter().zip(grad_outputs) {
        crate::tensor::check_same_meta("grad", o, g)?;
        roots.push(((*o).clone(), if create_graph { (*g).clone() } else { g.detach() }));
    }
    for t in inputs {
        if !t.tracks_grad() {
            return Err(Error::invalid(
                "grad",
                format!(
                    "input of shape {:?} does not track gradients (not a grad leaf nor a recorded result)",
                    t.shape()
                ),
            ));
        }
    }
    let opts = BackwardOptions {
        retain_graph: create_graph,
        create_graph,
    };
    run(&roots, opts, Some(inputs)).map(|g| g.unwrap_or_default())
}

/// The one reverse-pass engine. `capture`: `None` accumulates into grad leaves
/// (`backward`); `Some(inputs)` returns those tensors' gradients and touches no leaf
/// (`grad`), running only the nodes on a path to one of them.
fn run(
    roots: &[(Tensor, Tensor)],
    opts: BackwardOptions,
    capture: Option<&[&Tensor]>,
) -> Result<Option<Vec<Option<Tensor>>>> {
    for (root, _) in roots {
        if !root.tracks_grad() {
            return Err(Error::invalid(
                "backward",
                format!(
                    "tensor of shape {:?} does not track gradients: no input required grad, or it was computed under no_grad",
                    root.shape()
                ),
            ));
        }
    }
    let root_list: Vec<Tensor> = roots.iter().map(|(r, _)| r.clone()).collect();
    let order = topo_order(&root_list)?;
    let targets: Option<HashSet<usize>> = capture.map(|c| c.iter().map(|t| t.id()).collect());
    let needed = targets.as_ref().map(|t| needed_nodes(&order, t));
    // recording is on exactly when the pass must be differentiable
    let _off = (!opts.create_graph).then(NoGradGuard::new);
    let _on = opts.create_graph.then(EnableGradGuard::new);
    let leaf_hooks = crate::hooks::LeafScope::enter();
    let mut grads: HashMap<usize, Tensor> = HashMap::new();
    let mut captured: HashMap<usize, Tensor> = HashMap::new();
    for (root, seed) in roots {
        add_grad(&mut grads, root.id(), seed.clone())?;
    }
    for t in order.iter().rev() {
        let node = t.0.node.as_ref().expect("topo_order yields op results only");
        let Some(g) = grads.remove(&t.id()) else {
            if !opts.retains() && needed.is_none() {
                // not on a path from a root: its state is simply released
                node.state.lock().expect("node lock").take();
            }
            continue;
        };
        // `g` is final here: every consumer of `t` ran before it. Its hooks see it
        // (and may replace it) before it is captured or flows on; `grad` stores no
        // retained gradient, as it fills no `.grad`.
        let g = crate::hooks::on_gradient(t, g, capture.is_none())?;
        if let Some(targets) = &targets {
            if targets.contains(&t.id()) {
                captured.insert(t.id(), g.clone());
            }
        }
        if let Some(needed) = &needed {
            if !needed.contains(&t.id()) {
                continue;
            }
        }
        let (inputs, input_grads) = run_node(node, &g, opts.retains())?;
        for (inp, ig) in inputs.iter().zip(input_grads) {
            let Some(ig) = ig else { continue };
            if !inp.tracks_grad() {
                continue;
            }
            if ig.shape() != inp.shape() || ig.dtype() != inp.dtype() {
                return Err(Error::invalid(
                    "backward",
                    format!(
                        "op {} produced a gradient of shape {:?} ({}) for an input of shape {:?} ({})",
                        node.op,
                        ig.shape(),
                        ig.dtype(),
                        inp.shape(),
                        inp.dtype()
                    ),
                ));
            }
            if anomaly_detection() {
                check_finite(&ig, &node.op, "backward")?;
            }
            accumulate(inp, ig, &mut grads, capture.is_some())?;
        }
    }
    let Some(inputs) = capture else {
        // roots that are themselves leaves
        for (id, g) in grads {
            if let Some((root, _)) = roots.iter().find(|(r, _)| r.id() == id) {
                accumulate(root, g, &mut HashMap::new(), false)?;
            }
        }
        leaf_hooks.finish()?;
        return Ok(None);
    };
    // leaves (and roots that are inputs) are left in `grads`; a leaf's hooks see its
    // total gradient here, as they would before accumulation
    let mut out = Vec::with_capacity(inputs.len());
    for t in inputs {
        out.push(match captured.remove(&t.id()) {
            Some(g) => Some(g),
            None => match grads.remove(&t.id()) {
                Some(g) if t.is_grad_leaf() => Some(crate::hooks::on_gradient(t, g, false)?),
                g => g,
            },
        });
    }
    drop(leaf_hooks);
    Ok(Some(out))
}

/// Run one node's backward closure on its final incoming gradient `g`. With `retain`
/// the closure and inputs stay in the node for later passes; without, they are
/// taken (the graph is released as the pass consumes it).
fn run_node(node: &Node, g: &Tensor, retain: bool) -> Result<(Vec<Tensor>, Vec<Option<Tensor>>)> {
    let (inputs, bw) = {
        let mut state = node.state.lock().expect("node lock");
        let taken = if retain { state.clone() } else { state.take() };
        taken.ok_or_else(|| Error::GraphReleased { op: node.op.clone() })?
    };
    // outside the lock: the closure records new nodes (create_graph), never this one
    let input_grads = bw(g)?;
    if input_grads.len() != inputs.len() {
        return Err(Error::invalid(
            "backward",
            format!(
                "op {} returned {} gradients for {} inputs",
                node.op,
                input_grads.len(),
                inputs.len()
            ),
        ));
    }
    Ok((inputs, input_grads))
}

fn add_grad(grads: &mut HashMap<usize, Tensor>, id: usize, g: Tensor) -> Result<()> {
    let new = match grads.remove(&id) {
        Some(old) => old.add(&g)?,
        None => g,
    };
    grads.insert(id, new);
    Ok(())
}

/// Add `g` to `t`'s gradient: into its grad slot for a leaf (unless `capture`, where
/// leaves are kept in `grads` like every other tensor), else into `grads`.
fn accumulate(t: &Tensor, g: Tensor, grads: &mut HashMap<usize, Tensor>, capture: bool) -> Result<()> {
    match &t.0.grad {
        Some(slot) if !capture => {
            let Some(g) = crate::hooks::defer_leaf(t, g)? else {
                return Ok(());
            };
            let mut slot = slot.lock().expect("grad lock");
            *slot = Some(match slot.take() {
                Some(old) => old.add(&g)?,
                None => g,
            });
            Ok(())
        }
        _ => add_grad(grads, t.id(), g),
    }
}

/// Ids of the nodes in `order` (inputs before consumers) from which some target is
/// reachable through recorded inputs: the only nodes whose backward `grad` runs.
fn needed_nodes(order: &[Tensor], targets: &HashSet<usize>) -> HashSet<usize> {
    let mut needed = HashSet::new();
    for t in order {
        let node = t.0.node.as_ref().expect("topo_order yields op results only");
        let state = node.state.lock().expect("node lock");
        let Some((inputs, _)) = &*state else { continue };
        if inputs
            .iter()
            .any(|i| targets.contains(&i.id()) || needed.contains(&i.id()))
        {
            needed.insert(t.id());
        }
    }
    needed
}

/// Op results reachable from `roots`, each after all of its inputs.
fn topo_order(roots: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // iterative DFS: (tensor, children_pushed)
    let mut stack: Vec<(Tensor, bool)> = roots.iter().rev().map(|r| (r.clone(), false)).collect();
    while let Some((t, expanded)) = stack.pop() {
        let Some(node) = &t.0.node else { continue };
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        let inputs: Vec<Tensor> = match &*node.state.lock().expect("node lock") {
            Some((inputs, _)) => inputs.clone(),
            None => return Err(Error::GraphReleased { op: node.op.clone() }),
        };
        stack.push((t.clone(), true));
        for i in inputs {
            if i.0.node.is_some() && !seen.contains(&i.id()) {
                stack.push((i, false));
            }
        }
    }
    Ok(order)
}
