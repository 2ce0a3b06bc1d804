//! Replay of the reference fixtures for [`UnifiedNorm`] and [`PowerNorm`], on any device and
//! in f64 or f32.
//!
//! The fixtures (safetensors files plus `manifest.json`, `README.md` and `ALGORITHMS.md`,
//! copied into `nn/tests/data/fixtures/`) record whole training runs of the authors'
//! reference layers in f64: for every step the input, upstream gradient and mask, and the
//! output, every gradient, every state buffer and the counters after it; then one eval
//! forward. This module rebuilds each layer from the manifest's constructor arguments,
//! replays the run and compares everything. It lives in the library (not a test file) so
//! the shared suite can run it once per backend.
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
//! never silently skipped.

use super::power::{PnConfig, PnState, PowerNorm};
use super::unified::{UnConfig, UnState, UnifiedNorm, Window};
use crate::module::Module;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use unigrad_core::{DType, Device, Error, Result, Tensor};

const OP: &str = "fixture replay";

/// Environment variable that overrides the fixture directory.
pub const FIXTURES_ENV: &str = "UNIGRAD_FIXTURES_DIR";

/// The fixture directory: `$UNIGRAD_FIXTURES_DIR` when set, else the crate's own copy in
/// `nn/tests/data/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os(FIXTURES_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures"),
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

/// Replay one case, choosing the mode by dtype: f64 runs [`ReplayMode::Chained`], f32
/// [`ReplayMode::Stepwise`] (as the fixtures README recommends).
pub fn replay_case(dir: &Path, case_name: &str, device: &Device, dtype: DType) -> Result<CaseReport> {
    let mode = if dtype == DType::F64 {
        ReplayMode::Chained
    } else {
        ReplayMode::Stepwise
    };
    replay_case_with(dir, case_name, device, dtype, mode)
}

/// Replay one case of the manifest in `dir` on `device` in `dtype` (f32 or f64).
/// Returns `Err` for an unknown case or module, an unreadable or inconsistent file, or a
/// failing layer call; numerical disagreement is reported in the [`CaseReport`].
pub fn replay_case_with(
    dir: &Path,
    case_name: &str,
    device: &Device,
    dtype: DType,
    mode: ReplayMode,
) -> Result<CaseReport> {
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
    let tol = Tolerance::for_dtype(dtype);
    match info.module.as_str() {
        "un" => replay_un(info, &fx, device, dtype, mode, tol, &mut rep)?,
        _ => replay_pn(info, &fx, device, dtype, mode, tol, &mut rep)?,
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

fn mask_for(fx: &Fixture<'_>, info: &CaseInfo, t: usize, dtype: DType, dev: &Device) -> Result<Option<Tensor>> {
    let name = step_name(t, "mask");
    match (fx.has(&name), info.has_mask) {
        (true, _) => Ok(Some(fx.tensor(&name, dtype, dev)?)),
        (false, false) => Ok(None),
        (false, true) => Err(err(format!("{}: {name} is missing", info.file))),
    }
}

fn un_recorded_state(fx: &Fixture<'_>, t: Option<usize>, norm: &UnifiedNorm, dev: &Device) -> Result<UnState> {
    let d = norm.dtype();
    let init = norm.state(); // shapes only, for the initial state
    match t {
        None => {
            let c = norm.channels();
            let w = norm.config().window;
            Ok(UnState {
                running_var: Tensor::ones(&[c], d, dev)?,
                ema_gz: Tensor::zeros(&[c], d, dev)?,
                buffer_x2: Tensor::zeros(&[w.fwd, c], d, dev)?,
                buffer_gz: Tensor::zeros(&[w.bwd, c], d, dev)?,
                iters: Tensor::from_vec(vec![0i64], &[1], dev)?,
                skip_counter: Tensor::from_vec(vec![0i64], &[1], dev)?,
            })
        }
        Some(t) => Ok(UnState {
            running_var: fx.tensor_shaped(&step_name(t, "running_var"), init.running_var.shape(), d, dev)?,
            ema_gz: fx.tensor_shaped(&step_name(t, "ema_gz"), init.ema_gz.shape(), d, dev)?,
            buffer_x2: fx.tensor_shaped(&step_name(t, "buffer_x2"), init.buffer_x2.shape(), d, dev)?,
            buffer_gz: fx.tensor_shaped(&step_name(t, "buffer_gz"), init.buffer_gz.shape(), d, dev)?,
            iters: Tensor::from_vec(vec![fx.int(&step_name(t, "iters"))?], &[1], dev)?,
            skip_counter: Tensor::from_vec(vec![fx.int(&step_name(t, "skip_counter"))?], &[1], dev)?,
        }),
    }
}

fn set_params(fx: &Fixture<'_>, w: &Tensor, b: &Tensor, dtype: DType, dev: &Device) -> Result<()> {
    w.assign(&fx.tensor_shaped("param.weight", w.shape(), dtype, dev)?)?;
    b.assign(&fx.tensor_shaped("param.bias", b.shape(), dtype, dev)?)
}

fn replay_un(
    info: &CaseInfo,
    fx: &Fixture<'_>,
    dev: &Device,
    dtype: DType,
    mode: ReplayMode,
    tol: Tolerance,
    rep: &mut CaseReport,
) -> Result<()> {
    let (channels, cfg) = un_config(info)?;
    let mut norm = UnifiedNorm::new(channels, cfg, dtype, dev)?;
    set_params(fx, norm.weight(), norm.bias(), dtype, dev)?;
    norm.set_train(true);
    for t in 0..info.steps {
        if mode == ReplayMode::Stepwise {
            norm.set_state(&un_recorded_state(fx, t.checked_sub(1), &norm, dev)?)?;
        }
        let x = fx.tensor(&step_name(t, "x"), dtype, dev)?.requires_grad();
        let gy = fx.tensor(&step_name(t, "gy"), dtype, dev)?;
        let mask = mask_for(fx, info, t, dtype, dev)?;
        norm.zero_grad();
        let y = norm.forward(&x, mask.as_ref())?;
        y.backward_with(&gy)?;
        let step = norm
            .last_step()
            .ok_or_else(|| err("the training forward left no step record"))?;
        let s = Some(t);
        let want = |what: &str| fx.f64s(&step_name(t, what)).map(|v| v.0);
        rep.compare_f("y", s, &y.to_vec_f64()?, &want("y")?, tol);
        rep.compare_f("gx", s, &grad_of(&x, "x")?, &want("gx")?, tol);
        rep.compare_f("gw", s, &grad_of(norm.weight(), "weight")?, &want("gw")?, tol);
        rep.compare_f("gb", s, &grad_of(norm.bias(), "bias")?, &want("gb")?, tol);
        let st = norm.state();
        rep.compare_f(
            "running_var",
            s,
            &st.running_var.to_vec_f64()?,
            &want("running_var")?,
            tol,
        );
        rep.compare_f("ema_gz", s, &st.ema_gz.to_vec_f64()?, &want("ema_gz")?, tol);
        rep.compare_f("buffer_x2", s, &st.buffer_x2.to_vec_f64()?, &want("buffer_x2")?, tol);
        rep.compare_f("buffer_gz", s, &st.buffer_gz.to_vec_f64()?, &want("buffer_gz")?, tol);
        rep.compare_f("var", s, &step.var.to_vec_f64()?, &want("var")?, tol);
        rep.compare_f("r", s, &step.r.to_vec_f64()?, &want("r")?, tol);
        rep.compare_i("iters", s, norm.iterations()? as i64, fx.int(&step_name(t, "iters"))?);
        rep.compare_i(
            "skip_counter",
            s,
            norm.skip_count()? as i64,
            fx.int(&step_name(t, "skip_counter"))?,
        );
        rep.compare_i("skipped", s, step.skipped as i64, fx.int(&step_name(t, "skipped"))?);
        if step.skipped {
            rep.skips.push(t);
        }
    }
    if mode == ReplayMode::Stepwise {
        norm.set_state(&un_recorded_state(fx, info.steps.checked_sub(1), &norm, dev)?)?;
    }
    let before = norm.iterations()?;
    norm.set_train(false);
    let y = norm.forward(&fx.tensor("eval.x", dtype, dev)?, None)?;
    rep.compare_f("eval.y", None, &y.to_vec_f64()?, &fx.f64s("eval.y")?.0, tol);
    rep.compare_i("eval.iters", None, norm.iterations()? as i64, before as i64);
    Ok(())
}

fn pn_recorded_state(fx: &Fixture<'_>, t: Option<usize>, norm: &PowerNorm, dev: &Device) -> Result<PnState> {
    let (c, d) = (norm.channels(), norm.dtype());
    match t {
        None => Ok(PnState {
            running_phi: Tensor::ones(&[1, c, 1, 1], d, dev)?,
            ema_gz: Tensor::zeros(&[1, c, 1, 1], d, dev)?,
            iters: Tensor::from_vec(vec![0i64], &[1], dev)?,
        }),
        Some(t) => Ok(PnState {
            running_phi: fx.tensor_shaped(&step_name(t, "running_phi"), &[1, c, 1, 1], d, dev)?,
            ema_gz: fx.tensor_shaped(&step_name(t, "ema_gz"), &[1, c, 1, 1], d, dev)?,
            iters: Tensor::from_vec(vec![fx.int(&step_name(t, "iters"))?], &[1], dev)?,
        }),
    }
}

fn replay_pn(
    info: &CaseInfo,
    fx: &Fixture<'_>,
    dev: &Device,
    dtype: DType,
    mode: ReplayMode,
    tol: Tolerance,
    rep: &mut CaseReport,
) -> Result<()> {
    let (channels, cfg) = pn_config(info)?;
    let mut norm = PowerNorm::new(channels, cfg, dtype, dev)?;
    set_params(fx, norm.weight(), norm.bias(), dtype, dev)?;
    norm.set_train(true);
    for t in 0..info.steps {
        if mode == ReplayMode::Stepwise {
            norm.set_state(&pn_recorded_state(fx, t.checked_sub(1), &norm, dev)?)?;
        }
        // The fixtures are time-major [L, B, C] with a [B, L] mask; the layer takes
        // [B, L, C]. Transposing a view of the leaf keeps its gradient in fixture layout.
        let x = fx.tensor(&step_name(t, "x"), dtype, dev)?.requires_grad();
        let gy = fx.tensor(&step_name(t, "gy"), dtype, dev)?;
        let mask = mask_for(fx, info, t, dtype, dev)?;
        norm.zero_grad();
        let y = norm.forward(&x.transpose(0, 1)?, mask.as_ref())?.transpose(0, 1)?;
        y.backward_with(&gy)?;
        let step = norm
            .last_step()
            .ok_or_else(|| err("the training forward left no step record"))?;
        let s = Some(t);
        let want = |what: &str| fx.f64s(&step_name(t, what)).map(|v| v.0);
        rep.compare_f("y", s, &y.to_vec_f64()?, &want("y")?, tol);
        rep.compare_f("gx", s, &grad_of(&x, "x")?, &want("gx")?, tol);
        rep.compare_f("gw", s, &grad_of(norm.weight(), "weight")?, &want("gw")?, tol);
        rep.compare_f("gb", s, &grad_of(norm.bias(), "bias")?, &want("gb")?, tol);
        let st = norm.state();
        rep.compare_f(
            "running_phi",
            s,
            &st.running_phi.to_vec_f64()?,
            &want("running_phi")?,
            tol,
        );
        rep.compare_f("ema_gz", s, &st.ema_gz.to_vec_f64()?, &want("ema_gz")?, tol);
        rep.compare_f("var", s, &step.var.to_vec_f64()?, &want("var")?, tol);
        rep.compare_i("iters", s, norm.iterations()? as i64, fx.int(&step_name(t, "iters"))?);
    }
    if mode == ReplayMode::Stepwise {
        norm.set_state(&pn_recorded_state(fx, info.steps.checked_sub(1), &norm, dev)?)?;
    }
    let before = norm.iterations()?;
    norm.set_train(false);
    let ex = fx.tensor("eval.x", dtype, dev)?;
    let y = norm.forward(&ex.transpose(0, 1)?, None)?.transpose(0, 1)?;
    rep.compare_f("eval.y", None, &y.to_vec_f64()?, &fx.f64s("eval.y")?.0, tol);
    rep.compare_i("eval.iters", None, norm.iterations()? as i64, before as i64);
    Ok(())
}
