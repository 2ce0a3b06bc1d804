//! Puts the PTX of every `kernels/*.cu` into `$OUT_DIR` for the `cuda` feature
//! (and does nothing without it).
//!
//! * nvcc available (`$NVCC`, else `nvcc` on `PATH`): compile each kernel file with
//!   [`NVCC_FLAGS`], compare the result with the committed `kernels/<name>.ptx`
//!   (a warning, or an error when `CUDA_PTX_STRICT=1`), and assemble it with the
//!   `ptxas` next to nvcc for sm_80 and sm_90, which catches errors `nvcc -ptx` lets
//!   through. The fresh PTX is what gets embedded.
//! * no nvcc: copy the committed PTX. This is the normal case: the PTX is committed
//!   so that building the backend needs no CUDA toolkit.
//!
//! The committed files must come from the pinned nvcc 13.0 (`scripts/cuda/install-nvcc.sh`,
//! PTX `.version 9.0`, loadable by drivers R580+). Regenerate them with
//! `scripts/cuda/regen-ptx.sh`.
use std::env;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Flags for every kernel: PTX for compute capability 7.5 JIT-compiles on every GPU
/// from Turing on (H100 included); C++17 for `if constexpr` and friends.
const NVCC_FLAGS: &[&str] = &["-ptx", "-arch=compute_75", "-std=c++17"];
/// Real architectures the PTX must assemble for (A100, H100).
const PTXAS_CHECK_ARCHS: &[&str] = &["sm_80", "sm_90"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=emu");
    for var in ["NVCC", "PATH", "CUDA_PTX_STRICT", "CXX"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if env::var_os("CARGO_FEATURE_EMULATOR").is_some() {
        build_emulator(&out_dir);
    }
    let kernels = kernel_names();
    assert!(!kernels.is_empty(), "no kernels/*.cu found");

    let Some(nvcc) = find_nvcc() else {
        for name in &kernels {
            let committed = Path::new("kernels").join(format!("{name}.ptx"));
            std::fs::copy(&committed, out_dir.join(format!("{name}.ptx"))).unwrap_or_else(|e| {
                panic!(
                    "no nvcc found and {} is missing ({e}); run scripts/cuda/regen-ptx.sh",
                    committed.display()
                )
            });
        }
        return;
    };

    // nvcc runs once per file, all files at once (each is single-threaded).
    let jobs: Vec<(String, Child)> = kernels
        .iter()
        .map(|name| {
            let child = Command::new(&nvcc)
                .args(NVCC_FLAGS)
                .arg(format!("kernels/{name}.cu"))
                .arg("-o")
                .arg(out_dir.join(format!("{name}.ptx")))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
            (format!("nvcc {name}.cu"), child)
        })
        .collect();
    wait_all(jobs);

    let strict = env::var("CUDA_PTX_STRICT").is_ok_and(|v| v == "1");
    for name in &kernels {
        let fresh = std::fs::read_to_string(out_dir.join(format!("{name}.ptx"))).unwrap();
        let committed = std::fs::read_to_string(format!("kernels/{name}.ptx")).ok();
        if committed.as_deref() != Some(fresh.as_str()) {
            let msg = format!(
                "kernels/{name}.ptx differs from what {} makes; regenerate it with scripts/cuda/regen-ptx.sh \
                 (\"$NVCC\" {} kernels/{name}.cu -o kernels/{name}.ptx)",
                nvcc.display(),
                NVCC_FLAGS.join(" ")
            );
            if strict {
                panic!("{msg}");
            }
            println!("cargo:warning={msg}");
        }
    }

    let ptxas = nvcc.with_file_name("ptxas");
    if ptxas.is_file() {
        let jobs = kernels
            .iter()
            .flat_map(|name| PTXAS_CHECK_ARCHS.iter().map(move |arch| (name, arch)))
            .map(|(name, arch)| {
                let child = Command::new(&ptxas)
                    .arg(format!("-arch={arch}"))
                    .arg(out_dir.join(format!("{name}.ptx")))
                    .arg("-o")
                    .arg("/dev/null")
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", ptxas.display()));
                (format!("ptxas -arch={arch} {name}.ptx"), child)
            })
            .collect();
        wait_all(jobs);
    }
}

/// Compile `emu/emu.cpp` (which includes every kernel file) with the host C++
/// compiler into a static library and link it, with the C++ runtime.
fn build_emulator(out_dir: &Path) {
    let cxx = env::var("CXX").unwrap_or_else(|_| "c++".into());
    let obj = out_dir.join("unigrad_cuda_emu.o");
    run(Command::new(&cxx)
        .args([
            "-std=c++17",
            "-O2",
            "-fPIC",
            "-Wall",
            "-Wno-unknown-pragmas",
            "-c",
            "emu/emu.cpp",
            "-o",
        ])
        .arg(&obj));
    run(Command::new("ar")
        .arg("crs")
        .arg(out_dir.join("libunigrad_cuda_emu.a"))
        .arg(&obj));
    println!("cargo:rustc-link-search=native={}", out_dir.display());
    println!("cargo:rustc-link-lib=static=unigrad_cuda_emu");
    println!("cargo:rustc-link-lib=dylib=stdc++");
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed");
}

/// The stems of `kernels/*.cu`, sorted.
fn kernel_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("kernels")
        .expect("kernels/ directory")
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "cu").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    names
}

fn wait_all(jobs: Vec<(String, Child)>) {
    let mut failed = Vec::new();
    for (what, mut child) in jobs {
        match child.wait() {
            Ok(status) if status.success() => {}
            Ok(status) => failed.push(format!("{what}: {status}")),
            Err(e) => failed.push(format!("{what}: {e}")),
        }
    }
    assert!(failed.is_empty(), "failed: {}", failed.join("; "));
}

fn find_nvcc() -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    env::split_paths(&env::var_os("PATH")?)
        .map(|d| d.join("nvcc"))
        .find(|p| p.is_file())
}
