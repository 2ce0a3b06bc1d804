//! PTX loading: the embedded PTX modules, loading them into a context, and launching
//! their kernels with every argument checked against the kernel's PTX signature.
//!
//! The kernels are CUDA C in `kernels/<family>.cu` (one module per op family, named
//! like the launches in `src/ops/<family>.rs`), compiled to PTX for compute capability
//! 7.5 by the pinned nvcc 13.0 (PTX ISA 9.0) and committed; `build.rs` copies or
//! regenerates them into `OUT_DIR` and they are embedded here. At device creation
//! the driver JIT-compiles them for the actual GPU (and caches the result in
//! `~/.nv/ComputeCache`). Every `.entry` of every module is looked up once, so a
//! launch is a hash lookup plus `cuLaunchKernel`.
//!
//! `UNIGRAD_CUDA_PTX_DIR=<absolute dir>` loads `<dir>/<module>.ptx` instead of the
//! embedded copy, so PTX rebuilt on a GPU machine with its own nvcc can be tried
//! without rebuilding Rust.

use crate::driver::{backend_error, check, describe, driver_version, Gpu, Mode};
use crate::ffi::{self, CUfunction, CUmodule};
use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_void, CString};
use std::sync::Arc;
use unigrad_core::Result;

/// Environment variable naming a directory of replacement PTX files.
pub const PTX_DIR_ENV: &str = "UNIGRAD_CUDA_PTX_DIR";

/// The embedded PTX modules: `(module name, PTX text)`.
pub const MODULES: &[(&str, &str)] = &[
    (
        "elementwise",
        include_str!(concat!(env!("OUT_DIR"), "/elementwise.ptx")),
    ),
    ("index", include_str!(concat!(env!("OUT_DIR"), "/index.ptx"))),
    ("matmul", include_str!(concat!(env!("OUT_DIR"), "/matmul.ptx"))),
    ("norm", include_str!(concat!(env!("OUT_DIR"), "/norm.ptx"))),
    ("optim", include_str!(concat!(env!("OUT_DIR"), "/optim.ptx"))),
    ("reduce", include_str!(concat!(env!("OUT_DIR"), "/reduce.ptx"))),
    ("softmax", include_str!(concat!(env!("OUT_DIR"), "/softmax.ptx"))),
    ("view", include_str!(concat!(env!("OUT_DIR"), "/view.ptx"))),
    ("sort", include_str!(concat!(env!("OUT_DIR"), "/sort.ptx"))),
    ("scan", include_str!(concat!(env!("OUT_DIR"), "/scan.ptx"))),
];

/// Names of the `.visible .entry` kernels declared in a PTX text, in order.
pub fn entry_names(ptx: &str) -> Vec<&str> {
    ptx.lines()
        .filter_map(|l| l.trim_start().strip_prefix(".visible .entry "))
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .collect()
}

/// Byte sizes of the parameters of every `.visible .entry` in a PTX text, by name.
///
/// The launcher compares them with the arguments it is given, so a Rust call site
/// that disagrees with its kernel's signature is an error instead of a corrupted
/// launch.
pub fn entry_signatures(ptx: &str) -> HashMap<&str, Vec<usize>> {
    let mut out = HashMap::new();
    let mut lines = ptx.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix(".visible .entry ") else {
            continue;
        };
        let name = rest.split('(').next().unwrap_or("").trim();
        let mut sizes = Vec::new();
        if !rest.trim_end().ends_with("()") {
            for p in lines.by_ref() {
                if p.starts_with(')') {
                    break;
                }
                sizes.push(param_size(p));
            }
        }
        out.insert(name, sizes);
    }
    out
}

/// Size of one `.param` declaration (`.param .u64 x,` or `.param .align 8 .b8 x[144],`);
/// 0 when it cannot be read (which then never matches an argument).
fn param_size(decl: &str) -> usize {
    if let Some(open) = decl.find('[') {
        return decl[open + 1..]
            .split(']')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
    }
    let ty = decl.split_whitespace().nth(1).unwrap_or("");
    ty.trim_start_matches('.')
        .get(1..)
        .and_then(|bits| bits.parse::<usize>().ok())
        .map_or(0, |bits| bits / 8)
}

/// The first line of a PTX text that starts with `directive` (e.g. `.version 9.0`).
pub fn ptx_directive<'a>(ptx: &'a str, directive: &str) -> Option<&'a str> {
    ptx.lines().map(str::trim).find(|l| l.starts_with(directive))
}

/// Loaded modules and every kernel in them.
#[derive(Debug)]
pub(crate) struct Kernels {
    gpu: Arc<Gpu>,
    modules: Vec<CUmodule>,
    /// Every kernel with the byte sizes of its parameters.
    functions: HashMap<String, (CUfunction, Vec<usize>)>,
}

// SAFETY: module and function handles are immutable driver objects usable from any
// thread with the context current (ensured by `Gpu::enter` before every launch).
unsafe impl Send for Kernels {}
// SAFETY: see `Send`; the map is never mutated after `load`.
unsafe impl Sync for Kernels {}

impl Kernels {
    /// JIT-load every module into the (current) context of `gpu`.
    pub(crate) fn load(gpu: Arc<Gpu>) -> Result<Kernels> {
        gpu.enter()?;
        let mut kernels = Kernels {
            gpu,
            modules: Vec::new(),
            functions: HashMap::new(),
        };
        let override_dir = std::env::var_os(PTX_DIR_ENV);
        for &(module_name, embedded) in MODULES {
            let text = match &override_dir {
                Some(dir) => {
                    let path = std::path::Path::new(dir).join(format!("{module_name}.ptx"));
                    std::fs::read_to_string(&path).map_err(|e| {
                        backend_error(&kernels.gpu.name, format!("{PTX_DIR_ENV}: {}: {e}", path.display()))
                    })?
                }
                None => embedded.to_owned(),
            };
            let module = kernels.load_module(module_name, &text)?;
            kernels.modules.push(module);
            for (entry, sizes) in entry_signatures(&text) {
                let c_name = CString::new(entry).expect("PTX names contain no NUL");
                let mut f: CUfunction = std::ptr::null_mut();
                // SAFETY: `module` is loaded in the current context; writes one handle.
                let code = unsafe { ffi::cuModuleGetFunction(&mut f, module, c_name.as_ptr()) };
                check(code, &kernels.gpu.name, &format!("cuModuleGetFunction({entry})"))?;
                kernels.functions.insert(entry.to_owned(), (f, sizes));
            }
        }
        Ok(kernels)
    }

    /// Kernel table of the embedded PTX without loading anything (null handles),
    /// for a [`Gpu`] without a driver (dry run or emulator).
    #[cfg(any(test, feature = "emulator"))]
    pub(crate) fn without_driver(gpu: Arc<Gpu>) -> Kernels {
        let functions = MODULES
            .iter()
            .flat_map(|(_, ptx)| entry_signatures(ptx))
            .map(|(name, sizes)| (name.to_owned(), (std::ptr::null_mut(), sizes)))
            .collect();
        Kernels {
            gpu,
            modules: Vec::new(),
            functions,
        }
    }

    fn load_module(&self, module_name: &str, text: &str) -> Result<CUmodule> {
        let ptx = CString::new(text)
            .map_err(|_| backend_error(&self.gpu.name, format!("PTX module {module_name} contains a NUL byte")))?;
        let mut log = vec![0u8; 8192];
        let mut options: [c_int; 2] = [ffi::CU_JIT_ERROR_LOG_BUFFER, ffi::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES];
        // The driver's convention: option values are passed as pointer-sized words.
        let mut values: [*mut c_void; 2] = [log.as_mut_ptr() as *mut c_void, log.len() as *mut c_void];
        let mut module: CUmodule = std::ptr::null_mut();
        // SAFETY: `ptx` is NUL-terminated; the log buffer outlives the call and its
        // size is passed alongside; writes one module handle.
        let code = unsafe {
            ffi::cuModuleLoadDataEx(
                &mut module,
                ptx.as_ptr() as *const c_void,
                options.len() as c_uint,
                options.as_mut_ptr(),
                values.as_mut_ptr(),
            )
        };
        if code == ffi::CUDA_SUCCESS {
            return Ok(module);
        }
        let jit_log = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)])
            .trim()
            .to_owned();
        let (dev_major, dev_minor) = self.gpu.compute_capability;
        Err(backend_error(
            &self.gpu.name,
            format!(
                "loading PTX module {module_name} ({}, {}) failed: {}; the driver supports CUDA {} \
                 (PTX newer than the driver's CUDA version cannot be loaded: CUDA 13.0 reads up to .version 9.0); \
                 device {} has compute capability {dev_major}.{dev_minor}{}",
                ptx_directive(text, ".version").unwrap_or(".version ?"),
                ptx_directive(text, ".target").unwrap_or(".target ?"),
                describe(code),
                driver_version(),
                self.gpu.product,
                if jit_log.is_empty() {
                    String::new()
                } else {
                    format!("; JIT log: {jit_log}")
                },
            ),
        ))
    }

    /// Launch kernel `name` on the stream.
    ///
    /// The number and byte sizes of `params` are checked against the kernel's PTX
    /// signature first; a mismatch is an error and nothing is launched.
    ///
    /// # Safety
    /// `params` must point to one value per kernel parameter, each of exactly the
    /// type the kernel declares, and every device address among them must be valid
    /// for the accesses the kernel makes with the given sizes.
    pub(crate) unsafe fn launch(
        &self,
        name: &str,
        grid: [u32; 3],
        block: u32,
        shared_bytes: u32,
        params: &[KArg],
    ) -> Result<()> {
        let (f, sizes) = self
            .functions
            .get(name)
            .map(|(f, s)| (*f, s))
            .ok_or_else(|| backend_error(&self.gpu.name, format!("kernel {name} is not in the loaded PTX")))?;
        if params.len() != sizes.len() || params.iter().zip(sizes).any(|(p, &s)| p.size != s) {
            let given: Vec<usize> = params.iter().map(|p| p.size).collect();
            return Err(backend_error(
                &self.gpu.name,
                format!("kernel {name} takes parameters of {sizes:?} bytes but was given {given:?}"),
            ));
        }
        let mut ptrs: Vec<*mut c_void> = params.iter().map(|p| p.ptr).collect();
        match self.gpu.mode() {
            Mode::Driver => {}
            Mode::DryRun => return Ok(()),
            Mode::Emulated => return self.emulate(name, grid, block, &mut ptrs),
        }
        check(
            ffi::cuLaunchKernel(
                f,
                grid[0],
                grid[1],
                grid[2],
                block,
                1,
                1,
                shared_bytes,
                self.gpu.stream(),
                ptrs.as_mut_ptr(),
                std::ptr::null_mut(),
            ),
            &self.gpu.name,
            &format!("launching {name} (grid {grid:?}, block {block})"),
        )
    }
}

impl Kernels {
    /// Run a launch on the CPU kernel emulator (synchronously).
    ///
    /// # Safety
    /// As for [`Kernels::launch`]; device addresses are host addresses here.
    #[cfg(feature = "emulator")]
    unsafe fn emulate(&self, name: &str, grid: [u32; 3], block: u32, ptrs: &mut [*mut c_void]) -> Result<()> {
        extern "C" {
            fn unigrad_emu_launch(
                name: *const std::ffi::c_char,
                gx: c_uint,
                gy: c_uint,
                gz: c_uint,
                bx: c_uint,
                params: *mut *mut c_void,
            ) -> c_int;
            fn unigrad_emu_last_error() -> *const std::ffi::c_char;
        }
        // The emulator keeps its state in globals: one launch at a time.
        static EMULATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = EMULATOR.lock().unwrap_or_else(|e| e.into_inner());
        let c_name = CString::new(name).expect("kernel names contain no NUL");
        let code = unigrad_emu_launch(c_name.as_ptr(), grid[0], grid[1], grid[2], block, ptrs.as_mut_ptr());
        if code == 0 {
            return Ok(());
        }
        let msg = std::ffi::CStr::from_ptr(unigrad_emu_last_error()).to_string_lossy();
        Err(backend_error(&self.gpu.name, format!("emulating {name}: {msg}")))
    }

    /// Without the `emulator` feature no emulated `Gpu` can exist.
    #[cfg(not(feature = "emulator"))]
    unsafe fn emulate(&self, name: &str, _: [u32; 3], _: u32, _: &mut [*mut c_void]) -> Result<()> {
        Err(backend_error(
            &self.gpu.name,
            format!("{name}: built without the emulator"),
        ))
    }
}

impl Drop for Kernels {
    fn drop(&mut self) {
        if self.gpu.mode() == Mode::Driver && self.gpu.enter().is_ok() {
            for &m in &self.modules {
                // SAFETY: loaded by `load` in this context; no launches can follow.
                unsafe { ffi::cuModuleUnload(m) };
            }
        }
    }
}

/// A kernel parameter: a plain value whose bytes the driver copies as declared in
/// the PTX. Implemented only for the exact types the kernels take.
///
/// # Safety
/// Implementors must be `Copy` data without padding whose layout matches the CUDA
/// type of the parameter they are passed for.
pub(crate) unsafe trait KernelArg: Copy {}
// SAFETY: primitive types with the same layout as their CUDA counterparts
// (device pointers are u64).
unsafe impl KernelArg for u32 {}
// SAFETY: as above.
unsafe impl KernelArg for i32 {}
// SAFETY: as above.
unsafe impl KernelArg for u64 {}
// SAFETY: as above.
unsafe impl KernelArg for f64 {}

/// One kernel parameter for [`Kernels::launch`]: where its value is and its size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KArg {
    ptr: *mut c_void,
    size: usize,
}

/// Describe one kernel parameter.
pub(crate) fn arg<T: KernelArg>(v: &T) -> KArg {
    KArg {
        ptr: v as *const T as *mut c_void,
        size: std::mem::size_of::<T>(),
    }
}

/// `[arg(&a), arg(&b), ..]`. Only identifiers are accepted, so every parameter is
/// a named local that outlives the launch (a temporary would dangle).
macro_rules! kargs {
    ($($a:ident),* $(,)?) => {
        [$($crate::ptx::arg(&$a)),*]
    };
}
pub(crate) use kargs;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_read_from_the_ptx() {
        let ptx = ".visible .entry k(\n\t.param .align 8 .b8 k_param_0[144],\n\t.param .u64 k_param_1,\n\t                   .param .u32 k_param_2,\n\t.param .f64 k_param_3\n)\n{\n}\n.visible .entry empty()\n{\n}\n";
        let sigs = entry_signatures(ptx);
        assert_eq!(sigs["k"], vec![144, 8, 4, 8]);
        assert_eq!(sigs["empty"], Vec::<usize>::new());
        assert_eq!(entry_names(ptx), vec!["k", "empty"]);
    }

    #[test]
    fn every_embedded_kernel_has_a_readable_signature() {
        for (module, ptx) in MODULES {
            let sigs = entry_signatures(ptx);
            assert_eq!(sigs.len(), entry_names(ptx).len(), "{module}");
            for (name, sizes) in sigs {
                assert!(!sizes.is_empty() && !sizes.contains(&0), "{module}.{name}: {sizes:?}");
            }
        }
        // Spot checks against the CUDA declarations.
        let module = |name: &str| MODULES.iter().find(|(m, _)| *m == name).unwrap().1;
        let elementwise = entry_signatures(module("elementwise"));
        assert_eq!(elementwise["unary_f32"], vec![144, 8, 8, 8, 4, 8, 8]);
        let matmul = entry_signatures(module("matmul"));
        assert_eq!(matmul["matmul_f32_t128"], vec![216, 8, 8, 8, 8, 4, 4, 4, 4, 4, 4, 4]);
        assert_eq!(matmul["matmul_f64_big"], vec![216, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]);
        let norm = entry_signatures(module("norm"));
        assert_eq!(norm["norm_fwd_f32"], vec![8, 8, 8, 8, 8, 8, 8, 8, 8, 4, 4]);
        assert_eq!(norm["norm_bwd_cols_f64"], vec![8; 10]);
        let optim = entry_signatures(module("optim"));
        assert_eq!(optim["adam_f32"], [vec![8; 14], vec![4]].concat());
    }
}
