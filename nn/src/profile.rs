//! Opt-in wall-clock timing of the nn layers, for finding where a training step goes.
//!
//! Set `UNIGRAD_PROFILE=1` (or call [`set_enabled`]) and the layers time their forward
//! and backward passes under names such as `linear.fwd` or `attention.bwd`; [`report`]
//! returns the totals. When disabled the cost is one relaxed atomic load per scope.
//! Times are wall-clock and include waiting for the device (`Backend::synchronize` is
//! called at scope ends while profiling, so asynchronous backends are measured too).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use unigrad_core::Device;

/// 0 = not yet read from the environment, 1 = off, 2 = on.
static STATE: AtomicU8 = AtomicU8::new(0);
static TABLE: Mutex<Option<HashMap<&'static str, (Duration, u64)>>> = Mutex::new(None);

/// Whether profiling is on (first call reads `UNIGRAD_PROFILE`).
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("UNIGRAD_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0");
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        s => s == 2,
    }
}

/// Switch profiling on or off.
pub fn set_enabled(on: bool) {
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// A running timer; adds its elapsed time to `name` when dropped.
pub struct Scope {
    name: &'static str,
    device: Option<Device>,
    t0: Instant,
}

/// Start timing `name` if profiling is on.
pub fn scope(name: &'static str, device: Option<&Device>) -> Option<Scope> {
    if !enabled() {
        return None;
    }
    if let Some(d) = device {
        let _ = d.backend().synchronize();
    }
    Some(Scope {
        name,
        device: device.cloned(),
        t0: Instant::now(),
    })
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(d) = &self.device {
            let _ = d.backend().synchronize();
        }
        let dt = self.t0.elapsed();
        if let Ok(mut t) = TABLE.lock() {
            let e = t.get_or_insert_with(HashMap::new).entry(self.name).or_default();
            e.0 += dt;
            e.1 += 1;
        }
    }
}

/// Totals so far: `(name, total milliseconds, calls)`, largest first.
pub fn report() -> Vec<(&'static str, f64, u64)> {
    let t = TABLE.lock().map(|t| t.clone().unwrap_or_default()).unwrap_or_default();
    let mut v: Vec<_> = t.into_iter().map(|(k, (d, n))| (k, d.as_secs_f64() * 1e3, n)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// Forget all totals.
pub fn reset() {
    if let Ok(mut t) = TABLE.lock() {
        *t = None;
    }
}
