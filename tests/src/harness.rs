//! Running one suite function as one `#[test]`.
//!
//! Every suite function has the signature [`SuiteFn`]: it takes the device under
//! test and returns `Result<()>`. Errors from ops propagate with `?` and fail the
//! test with the error's message (which names the op and shapes); expectations
//! about values are plain `assert!`s.
//!
//! Why a harness at all, instead of calling the function directly from the
//! generated test:
//!
//! - **Skipping.** A backend whose device may be absent (CUDA on a machine without
//!   a GPU) passes `None`; the test then passes after writing one
//!   `SKIPPED <test>: <reason>` line to stderr, so a CPU-only CI stays green and the
//!   log still says what did not run.
//! - **Determinism.** Each test runs with its own generator (`rng::with_generator`),
//!   seeded from the test's name, serving every draw of its thread (and reseeded by
//!   `manual_seed` inside the test), so every test sees the same random inputs on every backend and
//!   in every run, whatever order libtest picks.
//! - **Isolation of process-wide state.** libtest runs tests in parallel threads of
//!   one process. Anomaly detection is a process-wide switch and the memory test
//!   reads the process's RSS, so those tests run in [`Mode::Exclusive`]: they take
//!   a write lock that every [`Mode::Shared`] test holds for reading.
//! - **Counting.** [`crate::util::check_grad`] counts gradient checks per thread;
//!   the harness prints the count of each test (visible with `--nocapture`).

use std::io::Write;
use std::sync::RwLock;
use unigrad_core::{Device, Result};

/// A suite function: one self-contained test against one device.
pub type SuiteFn = fn(&Device) -> Result<()>;

/// How a suite function may share the process with others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Runs concurrently with other shared tests (the default).
    Shared,
    /// Runs alone: touches process-wide state (anomaly switch, RSS).
    Exclusive,
}

static GATE: RwLock<()> = RwLock::new(());

/// FNV-1a hash of a name, used as the per-test RNG seed.
pub fn seed_for(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Run `f` on `device` as the test `name` (its full path, for messages), or report
/// it as skipped when `device` is `None`. `seed_name` (`group::function`, the same
/// for every backend) seeds the RNG, so all backends see the same inputs. Panics
/// (failing the test) when `f` returns an error.
pub fn run(name: &str, seed_name: &str, mode: Mode, f: SuiteFn, device: Option<Device>, skip_reason: &str) {
    let Some(dev) = device else {
        let line = format!("SKIPPED {name}: {skip_reason}\n");
        // Ignoring a failed write is fine: the test passes either way, the line is a courtesy.
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    };
    // A panicking test poisons the lock; the data is `()`, so the poison carries no meaning.
    let (_shared, _exclusive) = match mode {
        Mode::Shared => (Some(GATE.read().unwrap_or_else(|e| e.into_inner())), None),
        Mode::Exclusive => (None, Some(GATE.write().unwrap_or_else(|e| e.into_inner()))),
    };
    crate::util::reset_gradcheck_count();
    // The test's own generator serves every global draw of this thread, so tests
    // running in parallel never share the process-wide stream.
    let mut gen = unigrad_core::Generator::new(seed_for(seed_name));
    if let Err(e) = unigrad_core::with_generator(&mut gen, || f(&dev)) {
        panic!("{name} on {dev}: {e}");
    }
    let n = crate::util::gradcheck_count();
    if n > 0 {
        println!("{name}: {n} gradcheck cases");
    }
    let n = crate::util::gradgradcheck_count();
    if n > 0 {
        println!("{name}: {n} gradgradcheck cases");
    }
}
