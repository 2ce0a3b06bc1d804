//! Reference parity of Unified Normalization and PowerNorm: the fixtures of the authors'
//! reference layers replayed on the device under test, in f64 (chained and step by step)
//! and in f32 (step by step).
//!
//! The fixtures (safetensors files plus `manifest.json`, `README.md` and `ALGORITHMS.md`,
//! in `tests/data/fixtures/`) record whole training runs of the reference layers in f64:
//! for every step the input, upstream gradient and mask, and the output, every gradient,
//! every state buffer and the counters after it; then one eval forward. The replay
//! rebuilds each layer from the manifest's constructor arguments, runs the steps and
//! compares everything. The directory is `$UNIGRAD_FIXTURES_DIR` when set (see
//! [`fixtures_dir`]).
//!
//! Two modes:
//!
//! - [`ReplayMode::Chained`]: the layer carries its own state from step to step, as in
//!   training. The f64 end-to-end check.
//! - [`ReplayMode::Stepwise`]: each step starts from the state recorded after the previous
//!   one (the initial state at step 0). Isolates a step and avoids drift; the f32 check
//!   uses it, because state carried through `exp`/`ln` and the EMAs drifts in f32.
//!
//! Tolerance per tensor (fixtures README): `|got − want| ≤ rtol·|want| + atol·max(1,
//! max|want|)` with `rtol = 1e-9, atol = 1e-12` in f64 and `rtol = 1e-4, atol = 1e-5` in
//! f32. Counters and the skip flag must match exactly. A case whose `module` is not `un`
//! or `pn`, or whose constructor has an argument this replay does not know, is an error —
//! never silently skipped. Both layers run through one loop ([`replay_layer`]); what
//! differs (configuration, state, layout) is the [`Replayed`] trait.

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use unigrad_core::{DType, Device, Error, Result, Tensor};
use unigrad_nn::norm::power::{PnConfig, PnState, PowerNorm};
use unigrad_nn::norm::unified::{UnConfig, UnState, UnifiedNorm, Window};
use unigrad_nn::Module;

const OP: &str = "fixture replay";

/// Environment variable that overrides the fixture directory.
pub const FIXTURES_ENV: &str = "UNIGRAD_FIXTURES_DIR";

/// The fixture directory: `$UNIGRAD_FIXTURES_DIR` when set, else `data/fixtures` in this
/// crate's directory — taken from `$CARGO_MANIFEST_DIR` at run time (set by `cargo test`,
/// and by `run-all.sh` on a GPU machine that has no build tree), else at build time.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os(FIXTURES_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => std::env::var_os("CARGO_MANIFEST_DIR")
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
            .join("data/fixtures"),
    }
}

fn err(msg: impl Into<String>) -> Error {
    Error::invalid(OP, msg)
}

/// One case of the manifest.
#[derive(Clone, Debug)]
pub struct CaseInfo {
    /// Case name, e.g. `un_smoothing`.
    pub name: String,
    /// The safetensors file, relative to the fixture directory.
    pub file: String,
    /// `un` or `pn` (anything else makes the replay fail).
    pub module: String,
    /// Constructor arguments exactly as passed to the reference.
    pub ctor: serde_json::Map<String, Value>,
    /// Number of training steps `T`.
    pub steps: usize,
    /// Whether the steps carry a padding mask.
    pub has_mask: bool,
    /// Steps the reference's outlier filter skipped (UN only).
    pub skipped_iterations: Option<Vec<usize>>,
    /// Expected file size in bytes.
    pub file_bytes: Option<u64>,
}

/// Read and parse `manifest.json` in `dir`.
pub fn load_manifest(dir: &Path) -> Result<Vec<CaseInfo>> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let cases = v
        .get("cases")
        .and_then(Value::as_array)
        .ok_or_else(|| err(format!("{}: no `cases` array", path.display())))?;
    cases.iter().map(parse_case).collect()
}

fn parse_case(c: &Value) -> Result<CaseInfo> {
    let s = |k: &str| -> Result<String> {
        c.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| err(format!("manifest case without string `{k}`: {c}")))
    };
    let name = s("name")?;
    Ok(CaseInfo {
        file: s("file")?,
        module: s("module")?,
        ctor: c
            .get("ctor_kwargs")
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| err(format!("case {name}: no ctor_kwargs object")))?,
        steps: c
            .get("T")
            .and_then(Value::as_u64)
            .ok_or_else(|| err(format!("case {name}: no step count T")))? as usize,
        has_mask: c.get("has_mask").and_then(Value::as_bool).unwrap_or(false),
        skipped_iterations: c
            .get("skipped_iterations")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).map(|x| x as usize).collect()),
        file_bytes: c.get("file_bytes").and_then(Value::as_u64),
        name,
    })
}

/// How state flows between replayed steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayMode {
    /// The layer carries its own state through the whole run.
    Chained,
    /// Each step starts from the recorded state of the previous step.
    Stepwise,
}

/// Per-tensor tolerance: `|got − want| ≤ rtol·|want| + atol·max(1, max|want|)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative part.
    pub rtol: f64,
    /// Absolute part, scaled by `max(1, max|want|)` of the tensor.
    pub atol: f64,
}

impl Tolerance {
    /// The fixtures README's tolerance for `dtype` (f64: 1e-9 / 1e-12; f32: 1e-4 / 1e-5).
    pub fn for_dtype(dtype: DType) -> Tolerance {
        match dtype {
            DType::F64 => Tolerance {
                rtol: 1e-9,
                atol: 1e-12,
            },
            _ => Tolerance { rtol: 1e-4, atol: 1e-5 },
        }
    }
}

/// Agreement of one kind of tensor (e.g. `gx`) over all steps of a case.
#[derive(Clone, Debug, Default)]
pub struct KindStats {
    /// Tensors compared.
    pub tensors: usize,
    /// Largest `max|got − want| / max|want|` over the tensors (error relative to the
    /// tensor's magnitude; for integer kinds, 0 or 1 for a mismatch).
    pub max_rel: f64,
    /// Largest `|got − want| / (rtol·|want| + atol·max(1, max|want|))` over all elements:
    /// at most 1 means every element is within tolerance.
    pub max_tol_ratio: f64,
    /// Tensors with at least one element out of tolerance (or a mismatch).
    pub failures: usize,
    /// Step of the largest `max_rel` (`None` for the eval forward).
    pub worst_step: Option<usize>,
}

/// The outcome of replaying one case.
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// Case name.
    pub case: String,
    /// `un` or `pn`.
    pub module: String,
    /// Dtype the layer ran in.
    pub dtype: DType,
    /// State flow between steps.
    pub mode: ReplayMode,
    /// Training steps replayed.
    pub steps: usize,
    /// Per tensor kind (`y`, `gx`, `gw`, `gb`, each buffer, `iters`, `skipped`, `var`,
    /// `r`, `eval.y`, ...).
    pub kinds: BTreeMap<String, KindStats>,
    /// Steps at which the layer's outlier filter fired.
    pub skips: Vec<usize>,
    /// Descriptions of the first failures (at most 20).
    pub failures: Vec<String>,
    /// Total number of failures.
    pub failure_count: usize,
}

impl CaseReport {
    fn new(info: &CaseInfo, dtype: DType, mode: ReplayMode) -> CaseReport {
        CaseReport {
            case: info.name.clone(),
            module: info.module.clone(),
            dtype,
            mode,
            steps: info.steps,
            kinds: BTreeMap::new(),
            skips: Vec::new(),
            failures: Vec::new(),
            failure_count: 0,
        }
    }

    /// True when every compared tensor, counter and flag agreed.
    pub fn passed(&self) -> bool {
        self.failure_count == 0
    }

    /// One line per case: the max relative error per tensor kind, and PASS/FAIL.
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .kinds
            .iter()
            .map(|(k, s)| format!("{k} {:.1e}", s.max_rel))
            .collect();
        format!(
            "{} [{} {:?}, {} steps, {} skips]: {} — {}",
            self.case,
            self.dtype,
            self.mode,
            self.steps,
            self.skips.len(),
            kinds.join(", "),
            if self.passed() {
                "PASS".to_string()
            } else {
                format!(
                    "FAIL ({} failures; first: {})",
                    self.failure_count,
                    self.failures.join(" | ")
                )
            }
        )
    }

    fn fail(&mut self, msg: String) {
        self.failure_count += 1;
        if self.failures.len() < 20 {
            self.failures.push(msg);
        }
    }

    fn compare_f(&mut self, kind: &str, step: Option<usize>, got: &[f64], want: &[f64], tol: Tolerance) {
        let stats = self.kinds.entry(kind.to_string()).or_default();
        stats.tensors += 1;
        let mut msg = None;
        if got.len() != want.len() {
            stats.failures += 1;
            stats.max_rel = f64::INFINITY;
            msg = Some(format!(
                "{kind} at step {step:?}: {} values, want {}",
                got.len(),
                want.len()
            ));
        } else {
            let m = want.iter().fold(0.0f64, |a, w| a.max(w.abs()));
            let atol = tol.atol * m.max(1.0);
            let (mut max_abs, mut max_ratio, mut bad) = (0.0f64, 0.0f64, None);
            for (idx, (g, w)) in got.iter().zip(want).enumerate() {
                let d = (g - w).abs();
                let d = if d.is_nan() { f64::INFINITY } else { d };
                max_abs = max_abs.max(d);
                let ratio = d / (tol.rtol * w.abs() + atol);
                max_ratio = max_ratio.max(ratio);
                if ratio > 1.0 && bad.is_none() {
                    bad = Some((idx, *g, *w));
                }
            }
            let rel = if m > 0.0 { max_abs / m } else { max_abs };
            if stats.tensors == 1 || rel > stats.max_rel {
                stats.max_rel = rel;
                stats.worst_step = step;
            }
            stats.max_tol_ratio = stats.max_tol_ratio.max(max_ratio);
            if let Some((idx, g, w)) = bad {
                stats.failures += 1;
                msg = Some(format!(
                    "{kind} at step {step:?}: element {idx} is {g:e}, want {w:e} (max |want| {m:e})"
                ));
            }
        }
        if let Some(m) = msg {
            self.fail(m);
        }
    }

    fn compare_i(&mut self, kind: &str, step: Option<usize>, got: i64, want: i64) {
        let stats = self.kinds.entry(kind.to_string()).or_default();
        stats.tensors += 1;
        if got != want {
            stats.failures += 1;
            stats.max_rel = 1.0;
            stats.max_tol_ratio = f64::INFINITY;
            stats.worst_step = step;
            self.fail(format!("{kind} at step {step:?}: {got}, want {want}"));
        }
    }
}

/// The tensors of one fixture file.
struct Fixture<'a> {
    st: SafeTensors<'a>,
    file: String,
}

impl Fixture<'_> {
    fn has(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    fn raw(&self, name: &str) -> Result<(Dtype, Vec<usize>, &[u8])> {
        let v = self
            .st
            .tensor(name)
            .map_err(|e| err(format!("{}: tensor {name}: {e}", self.file)))?;
        Ok((v.dtype(), v.shape().to_vec(), v.data()))
    }

    fn f64s(&self, name: &str) -> Result<(Vec<f64>, Vec<usize>)> {
        let (dt, shape, data) = self.raw(name)?;
        let v = match dt {
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect(),
            Dtype::U8 => data.iter().map(|&b| b as f64).collect(),
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f64)
                .collect(),
            other => {
                return Err(err(format!(
                    "{}: tensor {name} has unexpected dtype {other:?}",
                    self.file
                )))
            }
        };
        Ok((v, shape))
    }

    fn int(&self, name: &str) -> Result<i64> {
        let (dt, _, data) = self.raw(name)?;
        match (dt, data.len()) {
            (Dtype::I64, 8) => Ok(i64::from_le_bytes(data.try_into().expect("8 bytes"))),
            (Dtype::U8, 1) => Ok(data[0] as i64),
            _ => Err(err(format!("{}: {name} is not a one-element integer", self.file))),
        }
    }

    fn tensor(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let (v, shape) = self.f64s(name)?;
        Tensor::from_f64s(&v, &shape, dtype, dev)
    }

    fn tensor_shaped(&self, name: &str, shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
        let (v, _) = self.f64s(name)?;
        Tensor::from_f64s(&v, shape, dtype, dev)
    }
}

fn step_name(t: usize, what: &str) -> String {
    format!("t{t:04}.{what}")
}

fn grad_of(t: &Tensor, what: &str) -> Result<Vec<f64>> {
    t.grad()
        .ok_or_else(|| err(format!("no gradient reached {what}")))?
        .to_vec_f64()
}

fn ctor_keys(info: &CaseInfo, known: &[&str]) -> Result<()> {
    for k in info.ctor.keys() {
        if !known.contains(&k.as_str()) {
            return Err(err(format!(
                "case {}: constructor argument `{k}` is not understood by this replay",
                info.name
            )));
        }
    }
    Ok(())
}

fn ctor_f64(info: &CaseInfo, k: &str) -> Result<Option<f64>> {
    match info.ctor.get(k) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| err(format!("case {}: `{k}` = {v} is not a number", info.name))),
    }
}

fn ctor_u64(info: &CaseInfo, k: &str) -> Result<Option<u64>> {
    match info.ctor.get(k) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| err(format!("case {}: `{k}` = {v} is not a count", info.name))),
    }
}

/// Build the UN config exactly as the reference resolves `ctor_kwargs`.
fn un_config(info: &CaseInfo) -> Result<(usize, UnConfig)> {
    ctor_keys(
        info,
        &[
            "channels",
            "window_size",
            "warmup_iters",
            "outlier_filtration",
            "eps",
            "momentum",
        ],
    )?;
    let d = UnConfig::default();
    let channels = ctor_u64(info, "channels")?.ok_or_else(|| err(format!("case {}: no channels", info.name)))?;
    let window = match info.ctor.get("window_size") {
        None => d.window,
        Some(Value::Number(n)) => Window::from(n.as_u64().ok_or_else(|| err("window_size is not a count"))? as usize),
        Some(Value::Array(a)) if a.len() == 2 => {
            let w = |i: usize| a[i].as_u64().ok_or_else(|| err("window_size entry is not a count"));
            Window::from((w(0)? as usize, w(1)? as usize))
        }
        Some(v) => return Err(err(format!("case {}: window_size {v} not understood", info.name))),
    };
    let outlier_filtration = match info.ctor.get("outlier_filtration") {
        None => d.outlier_filtration,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| err(format!("case {}: outlier_filtration {v} is not a bool", info.name)))?,
    };
    Ok((
        channels as usize,
        UnConfig {
            window,
            warmup_iters: ctor_u64(info, "warmup_iters")?.unwrap_or(d.warmup_iters),
            outlier_filtration,
            eps: ctor_f64(info, "eps")?.unwrap_or(d.eps),
            momentum: ctor_f64(info, "momentum")?.unwrap_or(d.momentum),
            calibrated_backward: true,
            r_clamp: d.r_clamp,
        },
    ))
}

fn pn_config(info: &CaseInfo) -> Result<(usize, PnConfig)> {
    ctor_keys(
        info,
        &[
            "num_features",
            "eps",
            "alpha_fwd",
            "alpha_bkw",
            "affine",
            "warmup_iters",
            "group_num",
        ],
    )?;
    if let Some(v) = info.ctor.get("affine") {
        // The reference stores `affine` but always applies γ and β; only `true` is the
        // behaviour this layer has by construction.
        if v.as_bool() != Some(true) {
            return Err(err(format!("case {}: affine = {v} is not supported", info.name)));
        }
    }
    let d = PnConfig::default();
    let channels =
        ctor_u64(info, "num_features")?.ok_or_else(|| err(format!("case {}: no num_features", info.name)))?;
    Ok((
        channels as usize,
        PnConfig {
            eps: ctor_f64(info, "eps")?.unwrap_or(d.eps),
            alpha_fwd: ctor_f64(info, "alpha_fwd")?.unwrap_or(d.alpha_fwd),
            alpha_bkw: ctor_f64(info, "alpha_bkw")?.unwrap_or(d.alpha_bkw),
            warmup_iters: ctor_u64(info, "warmup_iters")?.unwrap_or(d.warmup_iters),
            group_num: ctor_u64(info, "group_num")?.unwrap_or(d.group_num as u64) as usize,
        },
    ))
}

/// Replay one case of the manifest in `dir` on `device` in `dtype`, choosing the mode by
/// dtype: f64 runs [`ReplayMode::Chained`], f32 [`ReplayMode::Stepwise`] (as the fixtures
/// README recommends). Returns `Err` for an unknown case or module, an unreadable or
/// inconsistent file, or a failing layer call; numerical disagreement is reported in the
/// [`CaseReport`].
pub fn replay_case(dir: &Path, case_name: &str, device: &Device, dtype: DType) -> Result<CaseReport> {
    let mode = if dtype == DType::F64 {
        ReplayMode::Chained
    } else {
        ReplayMode::Stepwise
    };
    let cases = load_manifest(dir)?;
    let info = cases
        .iter()
        .find(|c| c.name == case_name)
        .ok_or_else(|| err(format!("case {case_name} is not in {}/manifest.json", dir.display())))?;
    replay_info(dir, info, device, dtype, mode)
}

/// Replay every case of the manifest in `dir`. Any case that cannot be replayed (an
/// unknown module included) makes this an error.
pub fn replay_all(dir: &Path, device: &Device, dtype: DType, mode: ReplayMode) -> Result<Vec<CaseReport>> {
    let cases = load_manifest(dir)?;
    if cases.is_empty() {
        return Err(err(format!("{}/manifest.json lists no cases", dir.display())));
    }
    cases.iter().map(|c| replay_info(dir, c, device, dtype, mode)).collect()
}

fn replay_info(dir: &Path, info: &CaseInfo, device: &Device, dtype: DType, mode: ReplayMode) -> Result<CaseReport> {
    if !dtype.is_float() {
        return Err(err(format!("replay needs a float dtype, got {dtype}")));
    }
    // Reject unknown modules before touching the file.
    if info.module != "un" && info.module != "pn" {
        return Err(err(format!(
            "case {}: module `{}` is not understood (known: un, pn)",
            info.name, info.module
        )));
    }
    let path = dir.join(&info.file);
    let bytes = std::fs::read(&path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    if let Some(n) = info.file_bytes {
        if n != bytes.len() as u64 {
            return Err(err(format!(
                "{}: {} bytes, the manifest says {n}",
                path.display(),
                bytes.len()
            )));
        }
    }
    let fx = Fixture {
        st: SafeTensors::deserialize(&bytes).map_err(|e| err(format!("{}: {e}", path.display())))?,
        file: info.file.clone(),
    };
    let mut rep = CaseReport::new(info, dtype, mode);
    let run = Run {
        info,
        fx: &fx,
        dev: device,
        dtype,
        mode,
        tol: Tolerance::for_dtype(dtype),
    };
    match info.module.as_str() {
        "un" => replay_layer(UnifiedNorm::from_case(info, dtype, device)?, &run, &mut rep)?,
        _ => replay_layer(PowerNorm::from_case(info, dtype, device)?, &run, &mut rep)?,
    }
    if let Some(want) = &info.skipped_iterations {
        if *want != rep.skips {
            rep.fail(format!(
                "skipped iterations {:?}, the manifest lists {want:?}",
                rep.skips
            ));
        }
    }
    Ok(rep)
}

/// One case being replayed: where its data comes from and how it runs.
struct Run<'a> {
    info: &'a CaseInfo,
    fx: &'a Fixture<'a>,
    dev: &'a Device,
    dtype: DType,
    mode: ReplayMode,
    tol: Tolerance,
}

impl Run<'_> {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        self.fx.tensor(name, self.dtype, self.dev)
    }

    fn tensor_shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.fx.tensor_shaped(name, shape, self.dtype, self.dev)
    }

    fn counter(&self, name: &str) -> Result<Tensor> {
        Tensor::from_vec(vec![self.fx.int(name)?], &[1], self.dev)
    }

    fn mask(&self, t: usize) -> Result<Option<Tensor>> {
        let name = step_name(t, "mask");
        match (self.fx.has(&name), self.info.has_mask) {
            (true, _) => Ok(Some(self.tensor(&name)?)),
            (false, false) => Ok(None),
            (false, true) => Err(err(format!("{}: {name} is missing", self.info.file))),
        }
    }
}

/// What the replay needs from a layer beyond [`Module`]; implemented by UN and PowerNorm.
trait Replayed: Module + Sized {
    /// Build the layer exactly as the reference resolves the case's `ctor_kwargs`.
    fn from_case(info: &CaseInfo, dtype: DType, dev: &Device) -> Result<Self>;
    /// Restore the state recorded after step `t` (`None`: the initial state).
    fn restore(&self, run: &Run<'_>, t: Option<usize>) -> Result<()>;
    /// The forward on a tensor in the fixtures' layout.
    fn forward_fixture(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor>;
    /// After a training step: the float state and diagnostics, and the integer ones besides
    /// `iters`, by the fixtures' names (`running_var`, `var`, ...; `skipped`, ...).
    #[allow(clippy::type_complexity)]
    fn step_values(&self) -> Result<(Vec<(&'static str, Vec<f64>)>, Vec<(&'static str, i64)>)>;
}

impl Replayed for UnifiedNorm {
    fn from_case(info: &CaseInfo, dtype: DType, dev: &Device) -> Result<Self> {
        let (channels, cfg) = un_config(info)?;
        UnifiedNorm::new(channels, cfg, dtype, dev)
    }

    fn restore(&self, run: &Run<'_>, t: Option<usize>) -> Result<()> {
        let (d, dev) = (self.dtype(), run.dev);
        let state = match t {
            None => {
                let (c, w) = (self.channels(), self.config().window);
                UnState {
                    running_var: Tensor::ones(&[c], d, dev)?,
                    ema_gz: Tensor::zeros(&[c], d, dev)?,
                    buffer_x2: Tensor::zeros(&[w.fwd, c], d, dev)?,
                    buffer_gz: Tensor::zeros(&[w.bwd, c], d, dev)?,
                    iters: Tensor::from_vec(vec![0i64], &[1], dev)?,
                    skip_counter: Tensor::from_vec(vec![0i64], &[1], dev)?,
                }
            }
            Some(t) => {
                let init = self.state(); // shapes only
                let f = |name: &str, like: &Tensor| run.tensor_shaped(&step_name(t, name), like.shape());
                UnState {
                    running_var: f("running_var", &init.running_var)?,
                    ema_gz: f("ema_gz", &init.ema_gz)?,
                    buffer_x2: f("buffer_x2", &init.buffer_x2)?,
                    buffer_gz: f("buffer_gz", &init.buffer_gz)?,
                    iters: run.counter(&step_name(t, "iters"))?,
                    skip_counter: run.counter(&step_name(t, "skip_counter"))?,
                }
            }
        };
        self.set_state(&state)
    }

    fn forward_fixture(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward(x, mask)
    }

    fn step_values(&self) -> Result<(Vec<(&'static str, Vec<f64>)>, Vec<(&'static str, i64)>)> {
        let step = self
            .last_step()
            .ok_or_else(|| err("the training forward left no step record"))?;
        let st = self.state();
        let floats = vec![
            ("running_var", st.running_var.to_vec_f64()?),
            ("ema_gz", st.ema_gz.to_vec_f64()?),
            ("buffer_x2", st.buffer_x2.to_vec_f64()?),
            ("buffer_gz", st.buffer_gz.to_vec_f64()?),
            ("var", step.var.to_vec_f64()?),
            ("r", step.r.to_vec_f64()?),
        ];
        let ints = vec![
            ("skip_counter", self.skip_count()? as i64),
            ("skipped", step.skipped as i64),
        ];
        Ok((floats, ints))
    }
}

impl Replayed for PowerNorm {
    fn from_case(info: &CaseInfo, dtype: DType, dev: &Device) -> Result<Self> {
        let (channels, cfg) = pn_config(info)?;
        PowerNorm::new(channels, cfg, dtype, dev)
    }

    fn restore(&self, run: &Run<'_>, t: Option<usize>) -> Result<()> {
        let (c, d, dev) = (self.channels(), self.dtype(), run.dev);
        let state = match t {
            None => PnState {
                running_phi: Tensor::ones(&[1, c, 1, 1], d, dev)?,
                ema_gz: Tensor::zeros(&[1, c, 1, 1], d, dev)?,
                iters: Tensor::from_vec(vec![0i64], &[1], dev)?,
            },
            Some(t) => PnState {
                running_phi: run.tensor_shaped(&step_name(t, "running_phi"), &[1, c, 1, 1])?,
                ema_gz: run.tensor_shaped(&step_name(t, "ema_gz"), &[1, c, 1, 1])?,
                iters: run.counter(&step_name(t, "iters"))?,
            },
        };
        self.set_state(&state)
    }

    /// The fixtures are time-major `[L, B, C]` with a `[B, L]` mask; the layer takes
    /// `[B, L, C]`. Transposing a view of the leaf keeps its gradient in fixture layout.
    fn forward_fixture(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward(&x.transpose(0, 1)?, mask)?.transpose(0, 1)
    }

    fn step_values(&self) -> Result<(Vec<(&'static str, Vec<f64>)>, Vec<(&'static str, i64)>)> {
        let step = self
            .last_step()
            .ok_or_else(|| err("the training forward left no step record"))?;
        let st = self.state();
        let floats = vec![
            ("running_phi", st.running_phi.to_vec_f64()?),
            ("ema_gz", st.ema_gz.to_vec_f64()?),
            ("var", step.var.to_vec_f64()?),
        ];
        Ok((floats, Vec::new()))
    }
}

/// A layer's parameter or buffer by its (reference) name.
fn named<T>(items: Vec<(String, T)>, name: &str) -> Result<T> {
    items
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| err(format!("the layer has no `{name}`")))
}

/// The layer's iteration counter, read from its `iters` buffer (both layers keep the
/// reference's name).
fn iterations(norm: &impl Module) -> Result<i64> {
    Ok(named(norm.named_buffers(), "iters")?.get().to_vec::<i64>()?[0])
}

/// The one replay loop: every training step (forward, backward, then outputs, gradients,
/// state and counters against the fixture), then the eval forward, which must leave the
/// counter alone.
fn replay_layer<L: Replayed>(mut norm: L, run: &Run<'_>, rep: &mut CaseReport) -> Result<()> {
    let (w, b) = (
        named(norm.named_params(), "weight")?,
        named(norm.named_params(), "bias")?,
    );
    w.assign(&run.tensor_shaped("param.weight", w.shape())?)?;
    b.assign(&run.tensor_shaped("param.bias", b.shape())?)?;
    norm.set_train(true);
    let (steps, tol) = (run.info.steps, run.tol);
    for t in 0..steps {
        if run.mode == ReplayMode::Stepwise {
            norm.restore(run, t.checked_sub(1))?;
        }
        let x = run.tensor(&step_name(t, "x"))?.requires_grad();
        let gy = run.tensor(&step_name(t, "gy"))?;
        let mask = run.mask(t)?;
        norm.zero_grad();
        let y = norm.forward_fixture(&x, mask.as_ref())?;
        y.backward_with(&gy)?;
        let s = Some(t);
        let want = |what: &str| run.fx.f64s(&step_name(t, what)).map(|v| v.0);
        rep.compare_f("y", s, &y.to_vec_f64()?, &want("y")?, tol);
        rep.compare_f("gx", s, &grad_of(&x, "x")?, &want("gx")?, tol);
        rep.compare_f("gw", s, &grad_of(&w, "weight")?, &want("gw")?, tol);
        rep.compare_f("gb", s, &grad_of(&b, "bias")?, &want("gb")?, tol);
        let (floats, ints) = norm.step_values()?;
        for (kind, got) in floats {
            rep.compare_f(kind, s, &got, &want(kind)?, tol);
        }
        rep.compare_i("iters", s, iterations(&norm)?, run.fx.int(&step_name(t, "iters"))?);
        for (kind, got) in ints {
            rep.compare_i(kind, s, got, run.fx.int(&step_name(t, kind))?);
            if kind == "skipped" && got != 0 {
                rep.skips.push(t);
            }
        }
    }
    if run.mode == ReplayMode::Stepwise {
        norm.restore(run, steps.checked_sub(1))?;
    }
    let before = iterations(&norm)?;
    norm.set_train(false);
    let y = norm.forward_fixture(&run.tensor("eval.x")?, None)?;
    rep.compare_f("eval.y", None, &y.to_vec_f64()?, &run.fx.f64s("eval.y")?.0, tol);
    rep.compare_i("eval.iters", None, iterations(&norm)?, before);
    Ok(())
}

// ----- the suite functions -----------------------------------------------------------------

/// Replay every case in `dtype` and `mode`; every comparison must have run and passed.
fn check_all(dev: &Device, dtype: DType, mode: ReplayMode) -> Result<()> {
    let dir = fixtures_dir();
    let t0 = std::time::Instant::now();
    let reports = replay_all(&dir, dev, dtype, mode).map_err(|e| err(format!("replay in {}: {e}", dir.display())))?;
    let manifest = load_manifest(&dir)?;
    assert_eq!(reports.len(), manifest.len(), "every manifest case is replayed");
    for r in &reports {
        println!("{}", r.summary());
    }
    println!("{dtype} {mode:?}: {} cases in {:.2?}", reports.len(), t0.elapsed());
    let failed: Vec<&CaseReport> = reports.iter().filter(|r| !r.passed()).collect();
    assert!(
        failed.is_empty(),
        "cases out of tolerance:\n{}",
        failed.iter().map(|r| r.summary()).collect::<Vec<_>>().join("\n")
    );
    // The comparisons really ran: every case compared outputs, gradients and state at
    // every step, and the eval forward once.
    for (r, info) in reports.iter().zip(&manifest) {
        for kind in ["y", "gx", "gw", "gb", "ema_gz", "iters", "var"] {
            let n = r.kinds.get(kind).map_or(0, |k| k.tensors);
            assert_eq!(n, info.steps, "{}: {kind} compared {n} times", r.case);
        }
        assert_eq!(r.kinds["eval.y"].tensors, 1, "{}", r.case);
        let state: &[&str] = if info.module == "un" {
            &["running_var", "buffer_x2", "buffer_gz", "skip_counter", "skipped", "r"]
        } else {
            &["running_phi"]
        };
        for kind in state {
            assert_eq!(r.kinds[*kind].tensors, info.steps, "{}: {kind}", r.case);
        }
    }
    Ok(())
}

/// Every case in f64, the layer carrying its own state through the run.
pub fn f64_chained(dev: &Device) -> Result<()> {
    check_all(dev, DType::F64, ReplayMode::Chained)
}

/// Every case in f64, each step from the recorded state of the previous one.
pub fn f64_stepwise(dev: &Device) -> Result<()> {
    check_all(dev, DType::F64, ReplayMode::Stepwise)
}

/// Every case in f32, step by step (f32 state would drift over a chained run).
pub fn f32_stepwise(dev: &Device) -> Result<()> {
    check_all(dev, DType::F32, ReplayMode::Stepwise)
}

/// [`replay_case`] runs one case (f64: chained) and records the filter's skips; an
/// unknown case is an error.
pub fn single_case_and_skip_record(dev: &Device) -> Result<()> {
    let r = replay_case(&fixtures_dir(), "un_early_filtration", dev, DType::F64)?;
    assert!(r.passed(), "{}", r.summary());
    assert_eq!(r.mode, ReplayMode::Chained);
    assert_eq!(r.skips, vec![0, 1, 2, 3, 4, 5, 6, 11]);
    assert!(replay_case(&fixtures_dir(), "no_such_case", dev, DType::F64).is_err());
    Ok(())
}

/// A copy of the manifest, edited by `edit`, next to copies of two small fixture files.
fn doctored_dir(tag: &str, edit: impl Fn(&mut Value)) -> Result<PathBuf> {
    let io = |e: std::io::Error| err(format!("doctored fixture dir {tag}: {e}"));
    let src = fixtures_dir();
    let dir = std::env::temp_dir().join(format!("unigrad-un-fixtures-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let text = std::fs::read_to_string(src.join("manifest.json")).map_err(io)?;
    let mut v: Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    edit(&mut v);
    std::fs::write(dir.join("manifest.json"), v.to_string()).map_err(io)?;
    for f in ["un_window1.safetensors", "pn_group.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).map_err(io)?;
    }
    Ok(dir)
}

fn keep_cases(v: &mut Value, names: &[&str]) {
    if let Some(cases) = v["cases"].as_array_mut() {
        cases.retain(|c| names.contains(&c["name"].as_str().unwrap_or("")));
    }
}

/// A case of an unknown module fails the replay instead of being skipped; the same
/// directory without it passes.
pub fn unknown_module_fails(dev: &Device) -> Result<()> {
    let dir = doctored_dir("module", |v| {
        keep_cases(v, &["un_window1", "pn_group"]);
        v["cases"][1]["module"] = "bn".into();
    })?;
    let e = replay_all(&dir, dev, DType::F64, ReplayMode::Chained).expect_err("unknown module must fail");
    assert!(e.to_string().contains("`bn`"), "{e}");
    let ok = doctored_dir("module-ok", |v| keep_cases(v, &["un_window1", "pn_group"]))?;
    let reports = replay_all(&ok, dev, DType::F64, ReplayMode::Chained)?;
    assert!(reports.iter().all(CaseReport::passed));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&ok);
    Ok(())
}

/// A constructor argument the replay does not know fails it.
pub fn unknown_constructor_argument_fails(dev: &Device) -> Result<()> {
    let dir = doctored_dir("ctor", |v| {
        keep_cases(v, &["un_window1"]);
        v["cases"][0]["ctor_kwargs"]["track_running_stats"] = true.into();
    })?;
    let e = replay_all(&dir, dev, DType::F64, ReplayMode::Chained).expect_err("unknown argument must fail");
    assert!(e.to_string().contains("track_running_stats"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The replay is only as good as its ability to fail: a changed hyperparameter (momentum
/// 0.8 instead of 0.9) must be reported as out of tolerance.
pub fn a_wrong_layer_is_caught(dev: &Device) -> Result<()> {
    let dir = doctored_dir("momentum", |v| {
        keep_cases(v, &["un_window1"]);
        v["cases"][0]["ctor_kwargs"]["momentum"] = 0.8.into();
    })?;
    let r = &replay_all(&dir, dev, DType::F64, ReplayMode::Chained)?[0];
    assert!(!r.passed());
    assert!(r.kinds["running_var"].failures > 0 && r.kinds["ema_gz"].failures > 0);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_covers_both_modules_and_the_quirk_cases() {
        let cases = load_manifest(&fixtures_dir()).expect("manifest");
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        for want in [
            "un_warmup_nomask",
            "un_warmup_mask",
            "un_smoothing",
            "un_outlier",
            "un_window_tuple",
            "un_input_2d",
            "un_early_filtration",
            "un_window1",
            "pn_basic",
            "pn_basic_mask",
            "pn_group",
        ] {
            assert!(
                names.contains(&want),
                "case {want} missing from the manifest: {names:?}"
            );
        }
        // Long cases pass iteration 1000, where r starts to differ from 1.
        assert!(cases.iter().any(|c| c.module == "un" && c.steps > 1000));
    }

    #[test]
    fn fixture_dir_default_is_the_crate_copy() {
        if std::env::var_os(FIXTURES_ENV).is_none() {
            let want = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fixtures");
            assert_eq!(fixtures_dir(), want);
            assert!(want.join("manifest.json").is_file());
            assert!(want.join("ALGORITHMS.md").is_file());
        }
    }
}
