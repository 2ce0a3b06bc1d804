//! Gradients of intermediates and gradient hooks.
//!
//! # Why
//!
//! `backward` fills the gradients of leaves only; the gradient of an op result is
//! summed, handed to the op's backward closure and dropped. Researchers and teachers
//! need to *see* that gradient (what reaches a norm's output, how large the gradient
//! of an attention score is) and sometimes to *change* it as it flows (clipping one
//! branch, reversing it for adversarial training, zeroing a head). This module adds
//! both, in PyTorch's shape:
//!
//! - [`Tensor::retain_grad`] on an op result makes `backward` store its gradient in
//!   [`Tensor::grad`] (accumulating like a leaf's until [`Tensor::zero_grad`]).
//! - [`Tensor::register_hook`] attaches a function that sees the tensor's *total*
//!   gradient once per backward (all contributions summed, before it flows on to the
//!   op's inputs or is accumulated into a leaf) and may return a replacement.
//!
//! # Semantics
//!
//! - Hooks run in registration order; each sees what the previous one returned. A
//!   replacement must have the gradient's shape, dtype and device (checked: an error
//!   names the tensor's shape and the replacement's).
//! - A retained gradient is stored *after* the hooks, so it is the gradient that flows
//!   on (as in PyTorch, where the retain-grad hook always runs last).
//! - On a leaf, the hooks see the sum of every contribution of one backward pass, and
//!   what they return is what is added to [`Tensor::grad`].
//! - Hooks run inside backward with recording as backward sets it: off for a plain
//!   `backward` (so a hook's own ops are not recorded).
//! - Hooks and the retain flag belong to the tensor handle's identity: clones share
//!   them; [`Tensor::detach`], views and op results do not inherit them.
//! - A hook that captures the tensor it is registered on keeps that tensor alive (a
//!   reference cycle); capture what the hook needs (a name, a sink), not the tensor.
//!
//! # Where backward calls in
//!
//! Two crate-internal entry points, called by `autograd::backward`: `on_gradient` where
//! a node's total gradient is known (before its backward closure runs), and `defer_leaf`
//! at leaf accumulation, inside a `LeafScope` that runs the leaves' hooks once their
//! gradient is complete (at the end of the pass).

use crate::error::{Error, Result};
use crate::tensor::{Inner, Tensor};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// A gradient hook: sees a tensor's total gradient and returns `Some(replacement)` or
/// `None` to leave it unchanged. See [`Tensor::register_hook`].
pub type GradHook = Arc<dyn Fn(&Tensor) -> Result<Option<Tensor>> + Send + Sync>;

static NEXT_HOOK: AtomicU64 = AtomicU64::new(1);

/// What a tensor carries once a hook is registered or its gradient retained.
#[derive(Default)]
pub(crate) struct HookState {
    hooks: Vec<(u64, GradHook)>,
    retain: bool,
    retained: Option<Tensor>,
}

/// The per-tensor slot (empty for almost every tensor: one lock, no allocation).
#[derive(Default)]
pub(crate) struct HookSlot(Mutex<Option<Box<HookState>>>);

impl HookSlot {
    fn lock(&self) -> MutexGuard<'_, Option<Box<HookState>>> {
        // a hook never runs under this lock, so a poisoned lock still holds valid state
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether anything is registered (hooks or the retain flag).
    fn is_set(&self) -> bool {
        self.lock().is_some()
    }
}

/// Removes the hook it was returned for ([`Tensor::register_hook`]). Dropping the
/// handle keeps the hook; call [`HookHandle::remove`] to take it off.
#[derive(Debug)]
pub struct HookHandle {
    target: Weak<Inner>,
    id: u64,
}

impl HookHandle {
    /// Take the hook off its tensor. Returns false when it was already removed or the
    /// tensor no longer exists.
    pub fn remove(self) -> bool {
        let Some(inner) = self.target.upgrade() else {
            return false;
        };
        let mut slot = inner.hooks.lock();
        let Some(state) = slot.as_mut() else {
            return false;
        };
        let before = state.hooks.len();
        state.hooks.retain(|(id, _)| *id != self.id);
        let removed = state.hooks.len() != before;
        if state.hooks.is_empty() && !state.retain && state.retained.is_none() {
            *slot = None;
        }
        removed
    }
}

impl Tensor {
    /// Make `backward` store this op result's gradient in [`Tensor::grad`], added to
    /// what is already stored (as for a leaf) until [`Tensor::zero_grad`]. A plain
    /// backward releases the graph it ran through, so a later backward reaches this
    /// tensor again only if its graph still exists. On a leaf (which keeps its gradient
    /// anyway) it does nothing. PyTorch's `retain_grad()`.
    ///
    /// The stored gradient is the one that flows on to the op's inputs: the output of
    /// this tensor's hooks, if any ([`Tensor::register_hook`]).
    ///
    /// A tensor that does not track gradients (no input required one, or it was
    /// computed under [`no_grad`](crate::no_grad)) is an error, as in PyTorch.
    ///
    /// ```
    /// # use unigrad_core::{DType, Device, Result, Tensor};
    /// # fn demo(dev: &Device) -> Result<()> {
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2], dev)?.requires_grad();
    /// let h = x.mul_scalar(3.0)?; // an intermediate
    /// h.retain_grad()?;
    /// h.sqr()?.sum_all()?.backward()?; // d/dh sum(h²) = 2h
    /// assert_eq!(h.grad().unwrap().to_vec::<f64>()?, vec![6.0, 12.0]);
    /// # Ok(()) }
    /// ```
    pub fn retain_grad(&self) -> Result<()> {
        if self.is_grad_leaf() {
            return Ok(());
        }
        if !self.tracks_grad() {
            return Err(Error::invalid(
                "retain_grad",
                format!(
                    "can't retain_grad on a tensor of shape {:?} that doesn't require gradient (no input required grad, or it was computed under no_grad)",
                    self.shape()
                ),
            ));
        }
        self.0.hooks.lock().get_or_insert_with(Box::default).retain = true;
        Ok(())
    }

    /// Whether `backward` stores this op result's gradient ([`Tensor::retain_grad`]).
    /// False for leaves, whose gradient is kept regardless.
    pub fn retains_grad(&self) -> bool {
        self.0.hooks.lock().as_ref().is_some_and(|s| s.retain)
    }

    /// Register `hook` on this tensor's gradient: at each backward that reaches this
    /// tensor, `hook` receives its total gradient once (every contribution summed)
    /// before it flows on to the inputs of the op that produced this tensor, or, on a
    /// leaf, before it is added to [`Tensor::grad`]. Returning `Some(g)` replaces the
    /// gradient with `g` (same shape, dtype and device, else backward fails with an
    /// error naming both shapes); `None` leaves it as it is. Several hooks run in
    /// registration order, each seeing the previous one's result. PyTorch's
    /// `register_hook`.
    ///
    /// The returned handle removes the hook ([`HookHandle::remove`]); dropping it
    /// keeps the hook. A tensor that does not track gradients is an error (PyTorch:
    /// "cannot register a hook on a tensor that doesn't require gradient").
    ///
    /// ```
    /// # use unigrad_core::{DType, Device, Result, Tensor};
    /// # fn demo(dev: &Device) -> Result<()> {
    /// let x = Tensor::from_vec(vec![1.0f64, -2.0], &[2], dev)?.requires_grad();
    /// let h = x.exp()?;
    /// // halve the gradient flowing through h: x's gradient halves too
    /// let handle = h.register_hook(|g| Ok(Some(g.mul_scalar(0.5)?)))?;
    /// h.sum_all()?.backward()?; // d/dx = exp(x) / 2
    /// let e = [1.0f64.exp() / 2.0, (-2.0f64).exp() / 2.0];
    /// assert_eq!(x.grad().unwrap().to_vec::<f64>()?, e.to_vec());
    /// assert!(handle.remove());
    /// # Ok(()) }
    /// ```
    pub fn register_hook<F>(&self, hook: F) -> Result<HookHandle>
    where
        F: Fn(&Tensor) -> Result<Option<Tensor>> + Send + Sync + 'static,
    {
        if !self.tracks_grad() {
            return Err(Error::invalid(
                "register_hook",
                format!(
                    "cannot register a hook on a tensor of shape {:?} that doesn't require gradient",
                    self.shape()
                ),
            ));
        }
        let id = NEXT_HOOK.fetch_add(1, Ordering::Relaxed);
        self.0
            .hooks
            .lock()
            .get_or_insert_with(Box::default)
            .hooks
            .push((id, Arc::new(hook)));
        Ok(HookHandle {
            target: Arc::downgrade(&self.0),
            id,
        })
    }

    /// Number of hooks registered on this tensor.
    pub fn hook_count(&self) -> usize {
        self.0.hooks.lock().as_ref().map_or(0, |s| s.hooks.len())
    }

    /// The retained gradient of a non-leaf ([`Tensor::retain_grad`]).
    pub(crate) fn retained_grad(&self) -> Option<Tensor> {
        self.0.hooks.lock().as_ref().and_then(|s| s.retained.clone())
    }

    /// Clear a retained gradient (a no-op when nothing is retained).
    pub(crate) fn clear_retained_grad(&self) {
        if let Some(s) = self.0.hooks.lock().as_mut() {
            s.retained = None;
        }
    }

    /// Add `g` to this leaf's gradient slot (what backward does for a leaf).
    fn accumulate_grad(&self, g: Tensor) -> Result<()> {
        if let Some(slot) = &self.0.grad {
            let mut slot = slot.lock().expect("grad lock");
            *slot = Some(match slot.take() {
                Some(old) => old.add(&g)?,
                None => g,
            });
        }
        Ok(())
    }

    /// Replace a retained gradient; false when this tensor does not retain its gradient.
    pub(crate) fn set_retained_grad(&self, g: Option<Tensor>) -> bool {
        match self.0.hooks.lock().as_mut() {
            Some(s) if s.retain => {
                s.retained = g;
                true
            }
            _ => false,
        }
    }
}

/// Run `t`'s hooks on its total gradient `g` and return the gradient that flows on;
/// store it when `t` retains its gradient and `store_retained` (false in
/// `autograd::grad`, which fills no `.grad`). Called by backward once per node, where the
/// node's gradient is complete and before its closure runs (and for leaves by
/// [`LeafScope::finish`]).
pub(crate) fn on_gradient(t: &Tensor, g: Tensor, store_retained: bool) -> Result<Tensor> {
    // snapshot the hooks: a hook may register or remove hooks, or run a backward itself
    let (hooks, retain) = match t.0.hooks.lock().as_ref() {
        None => return Ok(g),
        Some(s) => (s.hooks.iter().map(|(_, h)| h.clone()).collect::<Vec<_>>(), s.retain),
    };
    let mut g = g;
    for hook in hooks {
        if let Some(new) = hook(&g)? {
            if new.shape() != g.shape() || new.dtype() != g.dtype() || !new.device().same(g.device()) {
                return Err(Error::invalid(
                    "register_hook",
                    format!(
                        "a hook on a tensor of shape {:?} ({}) returned a gradient of shape {:?} ({}, {}); it must match the gradient's shape, dtype and device ({})",
                        t.shape(),
                        t.dtype(),
                        new.shape(),
                        new.dtype(),
                        new.device().name(),
                        g.device().name()
                    ),
                ));
            }
            g = new;
        }
    }
    if retain && store_retained && !t.is_grad_leaf() {
        let mut slot = t.0.hooks.lock();
        if let Some(s) = slot.as_mut() {
            s.retained = Some(match s.retained.take() {
                Some(old) => old.add(&g)?,
                None => g.clone(),
            });
        }
    }
    Ok(g)
}

thread_local! {
    /// One frame per running backward on this thread (a hook may run a backward of its
    /// own): the leaves with hooks and the sum of their gradients so far.
    static LEAF_FRAMES: RefCell<Vec<Vec<(Tensor, Tensor)>>> = const { RefCell::new(Vec::new()) };
}

/// Collects, for one backward pass, the gradients of leaves that carry hooks, so that
/// their hooks see each leaf's total gradient once. Created at the start of backward;
/// [`LeafScope::finish`] runs the hooks and accumulates. Dropped without `finish` (a
/// backward that failed), it discards what it collected.
pub(crate) struct LeafScope {
    depth: usize,
}

impl LeafScope {
    /// Open a frame for this backward pass.
    pub(crate) fn enter() -> LeafScope {
        let depth = LEAF_FRAMES.with(|f| {
            let mut f = f.borrow_mut();
            f.push(Vec::new());
            f.len()
        });
        LeafScope { depth }
    }

    /// Run each collected leaf's hooks on its total gradient and add the result to the
    /// leaf's gradient.
    pub(crate) fn finish(self) -> Result<()> {
        let frame = LEAF_FRAMES.with(|f| {
            let mut f = f.borrow_mut();
            let frame = f.get_mut(self.depth - 1).map(std::mem::take).unwrap_or_default();
            f.truncate(self.depth - 1);
            frame
        });
        for (leaf, g) in frame {
            let g = on_gradient(&leaf, g, true)?;
            leaf.accumulate_grad(g)?;
        }
        Ok(())
    }
}

impl Drop for LeafScope {
    fn drop(&mut self) {
        LEAF_FRAMES.with(|f| f.borrow_mut().truncate(self.depth - 1));
    }
}

/// Leaf accumulation: a leaf without hooks gets `g` back (accumulate it now); a leaf
/// with hooks has `g` summed into the running backward's [`LeafScope`] and gets `None`.
/// Outside any backward the hooks run at once.
pub(crate) fn defer_leaf(t: &Tensor, g: Tensor) -> Result<Option<Tensor>> {
    if !t.0.hooks.is_set() {
        return Ok(Some(g));
    }
    let pending = LEAF_FRAMES.with(|f| {
        let mut f = f.borrow_mut();
        let Some(frame) = f.last_mut() else {
            return Ok(Some(g));
        };
        match frame.iter_mut().find(|(leaf, _)| leaf.id() == t.id()) {
            Some((_, sum)) => *sum = sum.add(&g)?,
            None => frame.push((t.clone(), g)),
        }
        Ok::<_, Error>(None)
    })?;
    match pending {
        Some(g) => on_gradient(t, g, true).map(Some),
        None => Ok(None),
    }
}
