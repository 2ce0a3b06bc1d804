//! `Device`: a cheap handle to a backend, chosen at run time.
//!
//! Model code holds a `Device` and never names a backend type, so the same model
//! runs on the CPU or a GPU depending on a command-line flag.

use crate::backend::Backend;
use std::fmt;
use std::sync::Arc;

/// A handle to a compute backend. Cloning is cheap (an `Arc`).
#[derive(Clone)]
pub struct Device(Arc<dyn Backend>);

impl Device {
    /// Wrap a backend. Backend crates provide constructors, e.g. `unigrad_cpu::cpu()`.
    pub fn new(backend: Arc<dyn Backend>) -> Device {
        Device(backend)
    }

    /// The backend behind this handle.
    pub fn backend(&self) -> &dyn Backend {
        &*self.0
    }

    /// The device name (`cpu`, `cuda:0`, ...).
    pub fn name(&self) -> String {
        self.0.name()
    }

    /// True when both handles refer to the same device.
    pub fn same(&self, other: &Device) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.name() == other.0.name()
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Device({})", self.0.name())
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.name())
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
    }
}
