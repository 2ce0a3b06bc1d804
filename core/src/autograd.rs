//! Tape-based reverse-mode autodiff, in the spirit of micrograd.
//!
//! Every op that runs while gradients are enabled and has an input that tracks
//! gradients records a `Node`: its name, its inputs and a closure that maps the
//! output's gradient to the inputs' gradients. `backward` orders the recorded nodes
//! topologically, runs the closures in reverse (with recording switched off), and
//! accumulates into leaves. Each node's closure and inputs are *taken* as it runs,
//! so the graph is released by the backward pass itself.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Maps the gradient of an op's output to one optional gradient per input.
pub type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send>;

/// One recorded op.
pub(crate) struct Node {
    pub(crate) op: String,
    state: Mutex<Option<(Vec<Tensor>, BackwardFn)>>,
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
        state: Mutex::new(Some((inputs.iter().map(|t| (*t).clone()).collect(), backward))),
    };
    Ok(out.with_node(Arc::new(node)))
}

/// Reverse pass from `root` seeded with `seed` (same shape as `root`).
pub(crate) fn backward(root: &Tensor, seed: Tensor) -> Result<()> {
    if !root.tracks_grad() {
        return Err(Error::invalid(
            "backward",
            format!(
                "tensor of shape {:?} does not track gradients: no input required grad, or it was computed under no_grad",
                root.shape()
            ),
        ));
    }
    let order = topo_order(root)?;
    let _guard = NoGradGuard::new();
    let leaf_hooks = crate::hooks::LeafScope::enter();
    let mut grads: HashMap<usize, Tensor> = HashMap::new();
    grads.insert(root.id(), seed);
    for t in order.iter().rev() {
        let node = t.0.node.as_ref().expect("topo_order yields op results only");
        let state = node.state.lock().expect("node lock").take();
        let Some(g) = grads.remove(&t.id()) else {
            continue; // not on a path from the root: its state is simply released
        };
        let (inputs, bw) = state.ok_or_else(|| Error::GraphReleased { op: node.op.clone() })?;
        let g = crate::hooks::on_gradient(t, g)?;
        let input_grads = bw(&g)?;
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
            accumulate(inp, ig, &mut grads)?;
        }
    }
    if let Some(g) = grads.remove(&root.id()) {
        // root is itself a leaf
        accumulate(root, g, &mut HashMap::new())?;
    }
    leaf_hooks.finish()
}

fn accumulate(t: &Tensor, g: Tensor, grads: &mut HashMap<usize, Tensor>) -> Result<()> {
    if let Some(slot) = &t.0.grad {
        let Some(g) = crate::hooks::defer_leaf(t, g)? else {
            return Ok(());
        };
        let mut slot = slot.lock().expect("grad lock");
        *slot = Some(match slot.take() {
            Some(old) => old.add(&g)?,
            None => g,
        });
    } else if t.0.node.is_some() {
        let new = match grads.remove(&t.id()) {
            Some(old) => old.add(&g)?,
            None => g,
        };
        grads.insert(t.id(), new);
    }
    Ok(())
}

/// Op results reachable from `root`, each after all of its inputs.
fn topo_order(root: &Tensor) -> Result<Vec<Tensor>> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // iterative DFS: (tensor, children_pushed)
    let mut stack = vec![(root.clone(), false)];
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
