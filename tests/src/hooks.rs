//! Gradients of intermediates and gradient hooks (`unigrad_core::hooks`): retained
//! gradients equal the chain rule's values, a hook's replacement is exactly what flows
//! on, hooks run once per backward in registration order and can be removed, misuse is
//! an error naming the tensor, `requires_grad` on an op result never cuts the graph, and
//! hooks interact with `no_grad` and nested backward calls as documented.

use crate::util::{assert_close, randn, Tol};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use unigrad_core::{is_grad_enabled, no_grad, DType, Device, Result, Tensor};

fn exact() -> Tol {
    Tol {
        rtol: 1e-14,
        atol: 1e-14,
    }
}

fn values(t: &Option<Tensor>, what: &str) -> Result<Vec<f64>> {
    t.as_ref().unwrap_or_else(|| panic!("{what}: no gradient")).to_vec_f64()
}

fn expect_err<T>(what: &str, r: Result<T>, needles: &[&str]) {
    let Err(e) = r else { panic!("{what}: expected an error") };
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "{what}: error `{msg}` does not mention `{n}`");
    }
}

/// `retain_grad` on intermediates: their gradients equal the chain rule's values computed
/// on the host, a diamond sums both paths, the leaves' gradients are unchanged,
/// `zero_grad` and `set_grad` reach a retained gradient, and on a leaf it is a no-op.
pub fn retain_grad_matches_chain_rule(dev: &Device) -> Result<()> {
    let x = randn(dev, &[2, 3])?.requires_grad();
    let c = randn(dev, &[2, 3])?;
    // h = 2x, a = tanh(h), loss = sum(a * c) + sum(h)  (h feeds two consumers)
    let h = x.mul_scalar(2.0)?;
    let a = h.tanh()?;
    h.retain_grad()?;
    a.retain_grad()?;
    assert!(h.retains_grad() && a.retains_grad());
    let loss = a.mul(&c)?.sum_all()?.add(&h.sum_all()?)?;
    loss.retain_grad()?;
    loss.backward()?;
    let (av, cv) = (a.to_vec_f64()?, c.to_vec_f64()?);
    let da: Vec<f64> = cv.clone();
    let dh: Vec<f64> = cv.iter().zip(&av).map(|(c, a)| c * (1.0 - a * a) + 1.0).collect();
    let dx: Vec<f64> = dh.iter().map(|g| 2.0 * g).collect();
    assert_close("retained d loss / d a", &values(&a.grad(), "a")?, &da, exact());
    assert_close(
        "retained d loss / d h (two paths)",
        &values(&h.grad(), "h")?,
        &dh,
        exact(),
    );
    assert_close("leaf d loss / d x", &values(&x.grad(), "x")?, &dx, exact());
    assert_eq!(values(&loss.grad(), "root")?, vec![1.0], "the root retains its seed");
    assert!(!h.is_grad_leaf(), "retaining does not make a leaf");
    // an intermediate that does not retain has no gradient
    let b = x.exp()?;
    b.sum_all()?.backward()?;
    assert!(b.grad().is_none());
    // zero_grad clears a retained gradient; set_grad replaces it
    h.zero_grad();
    assert!(h.grad().is_none(), "zero_grad clears a retained gradient");
    h.set_grad(Some(Tensor::full(&[2, 3], 0.5, DType::F64, dev)?))?;
    assert_eq!(values(&h.grad(), "h")?, vec![0.5; 6]);
    h.set_grad(None)?;
    assert!(h.grad().is_none());
    expect_err(
        "set_grad on a non-retaining op result",
        b.set_grad(None),
        &["set_grad", "[2, 3]"],
    );
    // on a leaf: a no-op (the leaf keeps its gradient anyway)
    x.zero_grad();
    x.retain_grad()?;
    assert!(!x.retains_grad() && x.is_grad_leaf());
    x.sum_all()?.backward()?;
    assert_eq!(values(&x.grad(), "x")?, vec![1.0; 6]);
    Ok(())
}

/// A hook's replacement is exactly the gradient that flows on: the upstream leaf's
/// gradient and the retained gradient follow it; on a leaf, the hook sees the total
/// gradient of one backward once and its result is what accumulates.
pub fn hook_replacement_changes_downstream_gradients(dev: &Device) -> Result<()> {
    let x = randn(dev, &[3, 2])?.requires_grad();
    let h = x.exp()?;
    h.retain_grad()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let shift = Tensor::full(&[3, 2], 1.0, DType::F64, dev)?;
    // d loss / d h = 2h; the hook makes it 3·2h + 1
    h.register_hook(move |g| {
        s.lock().unwrap().push(g.to_vec_f64()?);
        Ok(Some(g.mul_scalar(3.0)?.add(&shift)?))
    })?;
    h.sqr()?.sum_all()?.backward()?;
    let hv = h.to_vec_f64()?;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "the hook runs once per backward");
    let two_h: Vec<f64> = hv.iter().map(|v| 2.0 * v).collect();
    assert_close("the hook sees the incoming gradient", &seen[0], &two_h, exact());
    let hooked: Vec<f64> = hv.iter().map(|v| 6.0 * v + 1.0).collect();
    assert_close(
        "retained = the hook's result",
        &values(&h.grad(), "h")?,
        &hooked,
        exact(),
    );
    let dx: Vec<f64> = hooked.iter().zip(&hv).map(|(g, h)| g * h).collect();
    assert_close(
        "upstream leaf follows the replacement",
        &values(&x.grad(), "x")?,
        &dx,
        exact(),
    );

    // on a leaf used three times: the hook sees the sum (2x + 1) once, its result accumulates
    let y = randn(dev, &[4])?.requires_grad();
    let calls = Arc::new(AtomicUsize::new(0));
    let got = Arc::new(Mutex::new(Vec::new()));
    let (c2, g2) = (calls.clone(), got.clone());
    y.register_hook(move |g| {
        c2.fetch_add(1, Ordering::SeqCst);
        *g2.lock().unwrap() = g.to_vec_f64()?;
        Ok(Some(g.neg()?))
    })?;
    y.mul(&y)?.add(&y)?.sum_all()?.backward()?;
    let yv = y.to_vec_f64()?;
    let total: Vec<f64> = yv.iter().map(|v| 2.0 * v + 1.0).collect();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "a leaf's hook runs once per backward");
    assert_close(
        "the leaf's hook sees the summed gradient",
        &got.lock().unwrap(),
        &total,
        exact(),
    );
    let neg: Vec<f64> = total.iter().map(|v| -v).collect();
    assert_close(
        "the leaf accumulates the replacement",
        &values(&y.grad(), "y")?,
        &neg,
        exact(),
    );
    // a leaf as the root of backward goes through its hooks too
    y.zero_grad();
    let s = Tensor::scalar(2.0, DType::F64, dev)?.requires_grad();
    s.register_hook(|g| Ok(Some(g.mul_scalar(5.0)?)))?;
    s.backward()?;
    assert_eq!(values(&s.grad(), "s")?, vec![5.0]);
    Ok(())
}

/// Several hooks run in registration order, each seeing the previous one's result;
/// `None` leaves the gradient unchanged; hooks on different tensors run as the gradient
/// reaches them (the output side first).
pub fn hook_order(dev: &Device) -> Result<()> {
    let x = randn(dev, &[2])?.requires_grad();
    let h = x.mul_scalar(1.0)?;
    let log = Arc::new(Mutex::new(Vec::<(String, Vec<f64>)>::new()));
    let hook = |name: &'static str, f: fn(&Tensor) -> Result<Option<Tensor>>| {
        let log = log.clone();
        move |g: &Tensor| {
            log.lock().unwrap().push((name.to_string(), g.to_vec_f64()?));
            f(g)
        }
    };
    h.register_hook(hook("h1 doubles", |g| Ok(Some(g.mul_scalar(2.0)?))))?;
    h.register_hook(hook("h2 keeps", |_| Ok(None)))?;
    h.register_hook(hook("h3 adds one", |g| Ok(Some(g.add_scalar(1.0)?))))?;
    x.register_hook(hook("x observes", |_| Ok(None)))?;
    h.sum_all()?.backward()?;
    let log = log.lock().unwrap().clone();
    let names: Vec<&str> = log.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["h1 doubles", "h2 keeps", "h3 adds one", "x observes"]);
    assert_eq!(log[0].1, vec![1.0, 1.0]);
    assert_eq!(log[1].1, vec![2.0, 2.0], "h2 sees h1's result");
    assert_eq!(log[2].1, vec![2.0, 2.0], "None kept the gradient");
    assert_eq!(log[3].1, vec![3.0, 3.0], "the leaf sees what flowed on");
    assert_eq!(values(&x.grad(), "x")?, vec![3.0, 3.0]);
    Ok(())
}

/// `HookHandle::remove` takes exactly its hook off; the others keep running; removing
/// from a dropped tensor reports false; clones share their hooks.
pub fn hook_removal(dev: &Device) -> Result<()> {
    let x = randn(dev, &[3])?.requires_grad();
    let twice = x.register_hook(|g| Ok(Some(g.mul_scalar(2.0)?)))?;
    let clone = x.clone();
    let _thrice = clone.register_hook(|g| Ok(Some(g.mul_scalar(3.0)?)))?;
    assert_eq!(x.hook_count(), 2, "clones share hooks");
    x.sum_all()?.backward()?;
    assert_eq!(values(&x.grad(), "x")?, vec![6.0; 3]);
    assert!(twice.remove(), "the first removal takes the hook off");
    assert_eq!(x.hook_count(), 1);
    x.zero_grad();
    x.sum_all()?.backward()?;
    assert_eq!(values(&x.grad(), "x")?, vec![3.0; 3], "only the remaining hook ran");
    let h = x.mul_scalar(1.0)?;
    h.register_hook(|_| Ok(None))?;
    assert_eq!(h.hook_count(), 1);
    // views and detached handles do not inherit hooks
    assert_eq!(h.detach().hook_count(), 0);
    assert_eq!(h.reshape(&[3, 1])?.hook_count(), 0);
    // a handle outliving its tensor
    let t = randn(dev, &[2])?.requires_grad();
    let handle = t.register_hook(|_| Ok(None))?;
    drop(t);
    assert!(!handle.remove(), "nothing to remove once the tensor is gone");
    Ok(())
}

/// Misuse is an error naming the op and the tensor's shape: hooks and retain_grad on a
/// tensor that does not track gradients, a replacement of another shape or dtype, and a
/// hook's own error reaches the caller of backward.
pub fn hook_errors(dev: &Device) -> Result<()> {
    let plain = randn(dev, &[2, 3])?;
    expect_err(
        "hook on an untracked tensor",
        plain.register_hook(|_| Ok(None)),
        &["register_hook", "[2, 3]", "doesn't require gradient"],
    );
    expect_err(
        "retain_grad on an untracked tensor",
        plain.retain_grad(),
        &["retain_grad", "[2, 3]", "doesn't require gradient"],
    );
    let x = randn(dev, &[2, 3])?.requires_grad();
    let detached = no_grad(|| x.exp())?;
    expect_err(
        "hook on a no_grad result",
        detached.register_hook(|_| Ok(None)),
        &["register_hook", "[2, 3]"],
    );
    let h = x.exp()?;
    let dev2 = dev.clone();
    h.register_hook(move |_| Ok(Some(Tensor::zeros(&[3, 2], DType::F64, &dev2)?)))?;
    expect_err(
        "replacement of another shape",
        h.sum_all()?.backward(),
        &["register_hook", "[2, 3]", "[3, 2]"],
    );
    let h = x.exp()?;
    h.register_hook(|g| Ok(Some(g.to_dtype(DType::F32)?)))?;
    expect_err(
        "replacement of another dtype",
        h.sum_all()?.backward(),
        &["register_hook", "f32"],
    );
    let h = x.exp()?;
    h.register_hook(|g| {
        Err(unigrad_core::Error::invalid(
            "my_hook",
            format!("refused {:?}", g.shape()),
        ))
    })?;
    expect_err(
        "a hook's own error",
        h.sum_all()?.backward(),
        &["my_hook", "refused [2, 3]"],
    );
    // a failed backward leaves no state behind: a later one runs the leaf's hooks normally
    let y = randn(dev, &[2])?.requires_grad();
    y.register_hook(|g| Ok(Some(g.mul_scalar(2.0)?)))?;
    let bad = y.exp()?;
    bad.register_hook(|_| Err(unigrad_core::Error::invalid("fail", "on purpose")))?;
    assert!(bad.add(&y)?.sum_all()?.backward().is_err());
    y.sum_all()?.backward()?;
    assert_eq!(values(&y.grad(), "y")?, vec![2.0, 2.0]);
    Ok(())
}

/// `requires_grad` on a tensor that already tracks gradients is a no-op: an op result
/// stays connected to its inputs (the graph is not cut) and a leaf stays the same leaf;
/// `.detach().requires_grad()` is the way to a new leaf.
pub fn requires_grad_on_non_leaf_keeps_the_graph(dev: &Device) -> Result<()> {
    let x = randn(dev, &[2, 2])?.requires_grad();
    let h = x.mul_scalar(3.0)?;
    let same = h.clone().requires_grad();
    assert_eq!(same.id(), h.id(), "same tensor");
    assert!(!same.is_grad_leaf() && same.tracks_grad());
    let also = h.clone().try_requires_grad()?;
    assert_eq!(also.id(), h.id());
    same.sum_all()?.backward()?;
    assert_eq!(values(&x.grad(), "x")?, vec![3.0; 4], "the gradient reached the input");
    assert!(same.grad().is_none(), "an op result keeps no gradient unless retained");
    // a leaf stays the same leaf (one gradient slot)
    let again = x.clone().requires_grad();
    assert_eq!(again.id(), x.id());
    again.sum_all()?.backward()?;
    assert_eq!(values(&x.grad(), "x")?, vec![4.0; 4], "one slot, accumulated");
    // detach().requires_grad(): a new leaf holding the values, cut from x
    x.zero_grad();
    let leaf = h.detach().requires_grad();
    assert!(leaf.is_grad_leaf() && leaf.id() != h.id());
    leaf.sqr()?.sum_all()?.backward()?;
    assert!(x.grad().is_none(), "the new leaf starts a new graph");
    let want: Vec<f64> = h.to_vec_f64()?.iter().map(|v| 2.0 * v).collect();
    assert_close("new leaf's gradient", &values(&leaf.grad(), "leaf")?, &want, exact());
    // an untracked result (no_grad) becomes a new leaf as before
    let nog = no_grad(|| x.mul_scalar(2.0))?;
    let nleaf = nog.requires_grad();
    assert!(nleaf.is_grad_leaf());
    Ok(())
}

/// Hooks and `no_grad`: hooks run during a plain backward with recording off (their ops
/// are not recorded); registering under `no_grad` works on a tracked tensor; a graph built
/// under `no_grad` never reaches them; a hook may run a backward of its own (nested), and
/// both passes get their leaves' hooks right.
pub fn hooks_with_no_grad(dev: &Device) -> Result<()> {
    let x = randn(dev, &[3])?.requires_grad();
    let h = x.exp()?;
    let recorded = Arc::new(Mutex::new(None));
    let r = recorded.clone();
    let handle = no_grad(|| {
        h.register_hook(move |g| {
            let doubled = g.mul_scalar(2.0)?;
            *r.lock().unwrap() = Some((is_grad_enabled(), doubled.tracks_grad()));
            Ok(Some(doubled))
        })
    })?;
    h.sum_all()?.backward()?;
    assert_eq!(
        *recorded.lock().unwrap(),
        Some((false, false)),
        "recording is off inside a plain backward's hooks"
    );
    let e: Vec<f64> = h.to_vec_f64()?.iter().map(|v| 2.0 * v).collect();
    assert_close(
        "hook registered under no_grad runs",
        &values(&x.grad(), "x")?,
        &e,
        exact(),
    );
    *recorded.lock().unwrap() = None;
    // ops on h under no_grad build no graph: backward cannot reach the hook
    let out = no_grad(|| h.sum_all())?;
    assert!(out.backward().is_err());
    assert!(recorded.lock().unwrap().is_none(), "the hook did not run");
    assert!(handle.remove());

    // a leaf's hook that runs a backward of its own on another graph with hooked leaves
    let z = randn(dev, &[2])?.requires_grad();
    z.register_hook(|g| Ok(Some(g.mul_scalar(10.0)?)))?;
    let y = randn(dev, &[2])?.requires_grad();
    let z2 = z.clone();
    y.register_hook(move |g| {
        // recording is off here, so the inner backward starts at the leaf itself
        z2.backward_with(&z2.ones_like()?)?;
        Ok(Some(g.add_scalar(1.0)?))
    })?;
    y.mul(&y)?.sum_all()?.backward()?;
    let want: Vec<f64> = y.to_vec_f64()?.iter().map(|v| 2.0 * v + 1.0).collect();
    assert_close("outer leaf", &values(&y.grad(), "y")?, &want, exact());
    assert_eq!(values(&z.grad(), "z")?, vec![10.0, 10.0], "inner leaf");
    Ok(())
}
