//! Checkpoints in the safetensors format.
//!
//! A model checkpoint holds every parameter and buffer under its hierarchical name,
//! which matches a PyTorch `state_dict` of the same structure, so files move between
//! the two (`safetensors.torch.load_file` reads ours). Optimizer state goes to a second
//! file ([`save_optimizer`]) for `--resume`.
//!
//! Guarantees:
//! * **Atomic writes**: data goes to a temporary file in the destination's folder, is
//!   fsynced, then renamed over the destination; a crash leaves the old file or the
//!   new one, never a torn one.
//! * **Integrity**: the header records an FNV-1a checksum of every tensor's name,
//!   dtype, shape and bytes; a truncated file fails the format's own length checks and
//!   flipped bytes fail the checksum, each with a clear error.
//! * **Validated loading**: [`load`] compares the file with the module and reports
//!   *every* missing and unexpected name and every shape or dtype mismatch, by name.
//!   Nothing is modified unless the whole file fits.
//! * **Floating dtypes cast on load**, as PyTorch's `load_state_dict` does: a file's
//!   F32, F64, F16 or BF16 tensor loads into an f32 or f64 module (F16 and BF16 widen to
//!   f32 exactly), and every cast is listed in [`LoadReport::casts`], so a lossy one
//!   (f64 file into an f32 model) is visible. Integer and floating dtypes never mix.
//! * **Saving in a chosen dtype**: [`save_as`] writes the floating tensors as F32, F64,
//!   F16 or BF16 (most published safetensors files are BF16); [`save`] keeps each
//!   tensor's own dtype. Conversions use the `half` crate (round to nearest even; values
//!   beyond the format's range become infinities, NaN stays NaN).
//! * **Errors name the path as given**, quoted (`"runs/m.safetensors"`), so an empty or
//!   odd path is visible in the message rather than printing as nothing.
//!
//! # Optimizer files
//!
//! The state tensors keep their names (`exp_avg.<param>`, ...); each parameter's update
//! count is an i64 scalar `step.<param>` (PyTorch also keeps a `step` per parameter), and
//! the header holds the optimizer kind, the number of `step` calls, the learning rate and
//! [`OPTIMIZER_FORMAT_KEY`]. Files written before per-parameter counts (no format key)
//! still load: their one shared count becomes the count of every parameter that has
//! state, which is what their updates had used.

use crate::module::Module;
use crate::optim::{Optimizer, OptimizerState};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use unigrad_core::{no_grad, DType, Device, Error, HostData, Result, Tensor};

const OP: &str = "checkpoint";
/// Metadata key of the integrity checksum.
pub const CHECKSUM_KEY: &str = "unigrad.fnv1a64";
/// Metadata key of the optimizer kind in optimizer files.
pub const OPTIMIZER_KEY: &str = "unigrad.optimizer";
/// Metadata key of the optimizer file format: `2` with per-parameter step counts
/// (`step.<param>` tensors); absent in older files, which hold one shared count.
pub const OPTIMIZER_FORMAT_KEY: &str = "unigrad.optimizer_format";
/// Name prefix of the per-parameter step counts in optimizer files.
const STEP_PREFIX: &str = "step.";

/// A path as errors show it: quoted, so that an empty one is seen as `""`.
fn shown(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::invalid(OP, format!("{}: {what}: {e}", shown(path)))
}

/// An empty path is an error before any file-system call (which would report only "No
/// such file or directory", or write nothing useful).
fn check_path(path: &Path, what: &str) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(Error::invalid(
            OP,
            format!("the path of the file to {what} is empty (\"\"); give a file path such as \"model.safetensors\""),
        ));
    }
    Ok(())
}

/// A tensor read from a file, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major data (F16 and BF16 files widened, exactly, to f32).
    pub data: HostData,
    /// The dtype the file stores it in.
    pub stored: FileDType,
}

/// A dtype of a tensor in a safetensors file: what [`save_as`] writes and what a
/// [`HostTensor`] was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileDType {
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// IEEE half precision (`half::f16`).
    F16,
    /// bfloat16 (`half::bf16`): f32's range with 8 bits of precision.
    BF16,
    /// 64-bit integers (never a target of [`save_as`]: integer tensors keep their dtype).
    I64,
}

impl FileDType {
    fn st(self) -> Dtype {
        match self {
            FileDType::F32 => Dtype::F32,
            FileDType::F64 => Dtype::F64,
            FileDType::F16 => Dtype::F16,
            FileDType::BF16 => Dtype::BF16,
            FileDType::I64 => Dtype::I64,
        }
    }

    /// The stored dtype of a tensor of dtype `d` saved as-is.
    fn of(d: DType) -> FileDType {
        match d {
            DType::F32 => FileDType::F32,
            DType::F64 => FileDType::F64,
            DType::I64 => FileDType::I64,
        }
    }

    /// True for the floating dtypes.
    pub fn is_float(self) -> bool {
        self != FileDType::I64
    }
}

impl fmt::Display for FileDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileDType::F32 => "f32",
            FileDType::F64 => "f64",
            FileDType::F16 => "f16",
            FileDType::BF16 => "bf16",
            FileDType::I64 => "i64",
        })
    }
}

impl HostTensor {
    /// Copy to a device.
    pub fn to_tensor(&self, dev: &Device) -> Result<Tensor> {
        Tensor::from_host(self.data.clone(), &self.shape, dev)
    }
}

/// The contents of a safetensors file: named tensors (sorted by name) and metadata.
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    /// Tensors by name.
    pub tensors: BTreeMap<String, HostTensor>,
    /// String metadata from the header (`__metadata__`).
    pub metadata: HashMap<String, String>,
}

fn host_bytes(h: &HostData) -> Vec<u8> {
    match h {
        HostData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        HostData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        HostData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// `h` as little-endian bytes of the floating dtype `to` (integer data and `to = I64`
/// are refused by the caller). Narrowing rounds to nearest even (`half`, `as f32`).
fn float_bytes(h: &HostData, to: FileDType) -> Vec<u8> {
    let v: Vec<f64> = match h {
        HostData::F32(v) if to != FileDType::F64 => {
            // from f32 directly, so that F16/BF16 round once (f32 -> half), not twice
            return match to {
                FileDType::F16 => v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
                FileDType::BF16 => v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
                _ => host_bytes(h),
            };
        }
        other => other.to_f64(),
    };
    match to {
        FileDType::F32 => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
        FileDType::F16 => v.iter().flat_map(|&x| half::f16::from_f64(x).to_le_bytes()).collect(),
        FileDType::BF16 => v.iter().flat_map(|&x| half::bf16::from_f64(x).to_le_bytes()).collect(),
        FileDType::F64 | FileDType::I64 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn from_bytes(name: &str, d: Dtype, b: &[u8]) -> Result<(HostData, FileDType)> {
    let two = |c: &[u8]| u16::from_le_bytes(c.try_into().expect("2"));
    Ok(match d {
        Dtype::F16 => (
            HostData::F32(
                b.chunks_exact(2)
                    .map(|c| half::f16::from_bits(two(c)).to_f32())
                    .collect(),
            ),
            FileDType::F16,
        ),
        Dtype::BF16 => (
            HostData::F32(
                b.chunks_exact(2)
                    .map(|c| half::bf16::from_bits(two(c)).to_f32())
                    .collect(),
            ),
            FileDType::BF16,
        ),
        Dtype::F32 => (
            HostData::F32(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                    .collect(),
            ),
            FileDType::F32,
        ),
        Dtype::F64 => (
            HostData::F64(
                b.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8")))
                    .collect(),
            ),
            FileDType::F64,
        ),
        Dtype::I64 => (
            HostData::I64(
                b.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
                    .collect(),
            ),
            FileDType::I64,
        ),
        other => {
            return Err(Error::invalid(
                OP,
                format!("tensor `{name}` has dtype {other:?}; only F32, F64, F16, BF16 and I64 are supported"),
            ))
        }
    })
}

/// FNV-1a over name, dtype, shape and data of every tensor in name order.
fn checksum<'a>(items: impl Iterator<Item = (&'a str, String, &'a [usize], &'a [u8])>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, dtype, shape, data) in items {
        eat(name.as_bytes());
        eat(&[0]);
        eat(dtype.as_bytes());
        for &d in shape {
            eat(&(d as u64).to_le_bytes());
        }
        eat(&(data.len() as u64).to_le_bytes());
        eat(data);
    }
    format!("{h:016x}")
}

/// Write named tensors and metadata to `path` atomically. Names must be unique.
pub fn save_tensors(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    check_path(path, "write")?;
    write_items(path, &tensor_items(tensors, None)?, metadata)
}

/// The tensors' names, dtypes, shapes and bytes (copied to the host); names must be
/// unique. With `float_as`, floating tensors are written in that dtype.
fn tensor_items(tensors: &[(String, Tensor)], float_as: Option<FileDType>) -> Result<Items> {
    let mut items = Items::new();
    for (name, t) in tensors {
        let host = t.to_host()?;
        let (stored, bytes) = match float_as {
            Some(to) if t.dtype().is_float() => (to, float_bytes(&host, to)),
            _ => (FileDType::of(t.dtype()), host_bytes(&host)),
        };
        add_item(&mut items, name.clone(), stored, t.shape().to_vec(), bytes)?;
    }
    Ok(items)
}

/// Tensors on their way to a file: dtype, shape and little-endian bytes, by name.
type Items = BTreeMap<String, (FileDType, Vec<usize>, Vec<u8>)>;

fn add_item(items: &mut Items, name: String, dtype: FileDType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<()> {
    if items.contains_key(&name) {
        return Err(Error::invalid(OP, format!("duplicate tensor name `{name}`")));
    }
    items.insert(name, (dtype, shape, bytes));
    Ok(())
}

/// Write `items` with `metadata` and the checksum to `path` atomically.
fn write_items(path: &Path, items: &Items, metadata: &HashMap<String, String>) -> Result<()> {
    let mut meta = metadata.clone();
    meta.insert(
        CHECKSUM_KEY.into(),
        checksum(
            items
                .iter()
                .map(|(n, (d, s, b))| (n.as_str(), format!("{:?}", d.st()), s.as_slice(), b.as_slice())),
        ),
    );
    let views = items
        .iter()
        .map(|(n, (d, s, b))| {
            TensorView::new(d.st(), s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::invalid(OP, format!("tensor `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::invalid(OP, format!("serialize: {e}")))?;
    write_atomic(path, &bytes)
}

/// Write `bytes` to `path` through a fsynced temporary file in the same folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    check_path(path, "write")?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        Error::invalid(
            OP,
            format!(
                "{} names no file (it ends in a folder or `..`); give a file path",
                shown(path)
            ),
        )
    })?;
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "create folder", e))?;
    let tmp = dir.join(format!(".{}.tmp-{}", file_name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, "create", e))?;
        f.write_all(bytes).map_err(|e| io_err(&tmp, "write", e))?;
        f.sync_all().map_err(|e| io_err(&tmp, "fsync", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, "rename into place", e))?;
        // make the rename itself durable (best effort: not every platform allows it)
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Read and verify a safetensors file.
pub fn load_tensors(path: impl AsRef<Path>) -> Result<StateDict> {
    let path = path.as_ref();
    check_path(path, "read")?;
    let bytes = std::fs::read(path).map_err(|e| io_err(path, "read", e))?;
    let bad = |what: String| {
        Error::invalid(
            OP,
            format!(
                "{}: not a valid safetensors file (truncated or corrupted?): {what}",
                shown(path)
            ),
        )
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut views: Vec<(String, TensorView<'_>)> = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(want) = metadata.get(CHECKSUM_KEY) {
        let got = checksum(
            views
                .iter()
                .map(|(n, v)| (n.as_str(), format!("{:?}", v.dtype()), v.shape(), v.data())),
        );
        if &got != want {
            return Err(bad(format!("checksum mismatch (header says {want}, data gives {got})")));
        }
    }
    let mut tensors = BTreeMap::new();
    for (name, v) in views {
        let (data, stored) = from_bytes(&name, v.dtype(), v.data())?;
        tensors.insert(
            name,
            HostTensor {
                shape: v.shape().to_vec(),
                data,
                stored,
            },
        );
    }
    Ok(StateDict { tensors, metadata })
}

/// Every parameter and buffer of `module` with its name (buffers after parameters).
pub fn state_tensors<M: Module + ?Sized>(module: &M) -> Vec<(String, Tensor)> {
    let mut v = module.named_params();
    v.extend(module.named_buffers().into_iter().map(|(n, b)| (n, b.get())));
    v
}

/// Save `module`'s parameters and buffers to `path` (atomic).
pub fn save<M: Module + ?Sized>(module: &M, path: impl AsRef<Path>) -> Result<()> {
    save_with_metadata(module, path, &HashMap::new())
}

/// [`save`] with extra string metadata in the header.
pub fn save_with_metadata<M: Module + ?Sized>(
    module: &M,
    path: impl AsRef<Path>,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    save_tensors(path, &state_tensors(module), metadata)
}

/// Save `module`'s parameters and buffers to `path` (atomic) with every floating tensor
/// stored as `dtype` (e.g. [`FileDType::BF16`]); integer tensors keep their dtype.
/// Narrowing rounds to nearest even; values beyond the dtype's range become infinities.
pub fn save_as<M: Module + ?Sized>(module: &M, path: impl AsRef<Path>, dtype: FileDType) -> Result<()> {
    let path = path.as_ref();
    check_path(path, "write")?;
    if !dtype.is_float() {
        return Err(Error::invalid(
            OP,
            format!("save_as stores floating tensors in a floating dtype (f32, f64, f16 or bf16), not {dtype}"),
        ));
    }
    write_items(
        path,
        &tensor_items(&state_tensors(module), Some(dtype))?,
        &HashMap::new(),
    )
}

/// What a load found: names the module has but the file lacks, names the file has but
/// the module lacks, entries whose shape or dtype differ, and the floating casts made.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// In the module, not in the file.
    pub missing: Vec<String>,
    /// In the file, not in the module.
    pub unexpected: Vec<String>,
    /// `name: file [shape] dtype vs module [shape] dtype`.
    pub mismatched: Vec<String>,
    /// `name: file bf16 -> module f32`: floating tensors stored in another dtype than
    /// the module's, cast on load (as PyTorch's `load_state_dict` does).
    pub casts: Vec<String>,
}

impl LoadReport {
    /// True when every name matches and no shape or dtype conflicts. Casts between
    /// floating dtypes do not make a report unclean (PyTorch casts silently; here they
    /// are listed in [`casts`](Self::casts)).
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing: {}", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected: {}", self.unexpected.join(", ")));
        }
        if !self.mismatched.is_empty() {
            parts.push(format!("mismatched: {}", self.mismatched.join("; ")));
        }
        if !self.casts.is_empty() {
            parts.push(format!("cast: {}", self.casts.join("; ")));
        }
        if parts.is_empty() {
            f.write_str("all names, shapes and dtypes match")
        } else {
            f.write_str(&parts.join(" | "))
        }
    }
}

/// Load `path` into `module`, requiring an exact match of names, shapes and dtypes.
/// On any problem returns an error listing all of them and changes nothing.
pub fn load<M: Module + ?Sized>(module: &M, path: impl AsRef<Path>) -> Result<LoadReport> {
    load_with(module, path, true)
}

/// Load `path` into `module`. With `strict = false`, missing and unexpected names are
/// tolerated (reported in the returned [`LoadReport`]); shape and dtype mismatches are
/// always errors. Nothing changes unless the load succeeds.
pub fn load_with<M: Module + ?Sized>(module: &M, path: impl AsRef<Path>, strict: bool) -> Result<LoadReport> {
    let path = path.as_ref();
    let sd = load_tensors(path)?;
    apply_state(module, &sd, strict).map_err(|e| match e {
        Error::InvalidArgument { op, msg } => Error::InvalidArgument {
            op,
            msg: format!("{}: {msg}", shown(path)),
        },
        other => other,
    })
}

/// Copy a [`StateDict`] into `module` (see [`load_with`]).
pub fn apply_state<M: Module + ?Sized>(module: &M, sd: &StateDict, strict: bool) -> Result<LoadReport> {
    let params = module.named_params();
    let buffers = module.named_buffers();
    let mut report = LoadReport::default();
    let mut seen = std::collections::HashSet::new();
    let mut check = |name: &str, target: &Tensor| -> Option<Tensor> {
        seen.insert(name.to_string());
        let Some(h) = sd.tensors.get(name) else {
            report.missing.push(name.to_string());
            return None;
        };
        let castable = h.stored.is_float() && target.dtype().is_float();
        if h.shape != target.shape() || (h.data.dtype() != target.dtype() && !castable) {
            report.mismatched.push(format!(
                "{name}: file {:?} {} vs module {:?} {}",
                h.shape,
                h.stored,
                target.shape(),
                target.dtype()
            ));
            return None;
        }
        if h.stored != FileDType::of(target.dtype()) {
            report
                .casts
                .push(format!("{name}: file {} -> module {}", h.stored, target.dtype()));
        }
        // a bad dtype/shape is caught above; this only fails on device errors
        h.to_tensor(target.device())
            .and_then(|t| {
                if t.dtype() == target.dtype() {
                    Ok(t)
                } else {
                    t.to_dtype(target.dtype())
                }
            })
            .ok()
    };
    let new_params: Vec<(Tensor, Option<Tensor>)> = params.iter().map(|(n, p)| (p.clone(), check(n, p))).collect();
    let new_buffers: Vec<_> = buffers
        .iter()
        .map(|(n, b)| {
            let cur = b.get();
            (b.clone(), check(n, &cur))
        })
        .collect();
    report.unexpected = sd.tensors.keys().filter(|k| !seen.contains(*k)).cloned().collect();
    let fatal = !report.mismatched.is_empty() || (strict && !report.is_clean());
    if fatal {
        return Err(Error::invalid(
            OP,
            format!("checkpoint does not fit the model: {report}"),
        ));
    }
    let loaded = new_params.iter().filter(|(_, t)| t.is_some()).count()
        + new_buffers.iter().filter(|(_, t)| t.is_some()).count();
    let expected = params.len() + buffers.len() - report.missing.len();
    if loaded != expected {
        return Err(Error::invalid(OP, "could not copy every tensor to the model's device"));
    }
    no_grad(|| -> Result<()> {
        for (p, t) in &new_params {
            if let Some(t) = t {
                p.assign(t)?;
            }
        }
        Ok(())
    })?;
    for (b, t) in new_buffers {
        if let Some(t) = t {
            b.set(t);
        }
    }
    Ok(report)
}

/// Save an optimizer's state (moments, per-parameter step counts, call count, learning
/// rate) plus `metadata` (atomic). See the module docs for the layout.
pub fn save_optimizer<O: Optimizer + ?Sized>(
    opt: &O,
    path: impl AsRef<Path>,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    check_path(path, "write")?;
    let st = opt.state();
    let mut meta = metadata.clone();
    meta.insert(OPTIMIZER_KEY.into(), st.kind.clone());
    meta.insert(OPTIMIZER_FORMAT_KEY.into(), "2".into());
    meta.insert("unigrad.step".into(), st.step.to_string());
    meta.insert("unigrad.lr".into(), format!("{:e}", st.lr));
    let mut items = tensor_items(&st.tensors, None)?;
    for (name, n) in &st.param_steps {
        let n = i64::try_from(*n)
            .map_err(|_| Error::invalid(OP, format!("step count {n} of `{name}` does not fit an i64")))?;
        let bytes = n.to_le_bytes().to_vec();
        add_item(
            &mut items,
            format!("{STEP_PREFIX}{name}"),
            FileDType::I64,
            Vec::new(),
            bytes,
        )?;
    }
    write_items(path, &items, &meta)
}

/// Restore an optimizer saved by [`save_optimizer`]; returns the file's metadata.
/// State tensors go to each parameter's device. Nothing changes on error. Files from
/// before per-parameter step counts load too (see the module docs).
pub fn load_optimizer<O: Optimizer + ?Sized>(opt: &mut O, path: impl AsRef<Path>) -> Result<HashMap<String, String>> {
    let path = path.as_ref();
    let sd = load_tensors(path)?;
    let bad = |msg: String| Error::invalid(OP, format!("{}: {msg}", shown(path)));
    let get = |k: &str| {
        sd.metadata
            .get(k)
            .cloned()
            .ok_or_else(|| bad(format!("not an optimizer file (no `{k}`)")))
    };
    let kind = get(OPTIMIZER_KEY)?;
    let step = get("unigrad.step")?
        .parse::<u64>()
        .map_err(|e| bad(format!("bad step: {e}")))?;
    let lr = get("unigrad.lr")?
        .parse::<f64>()
        .map_err(|e| bad(format!("bad lr: {e}")))?;
    let per_param = match sd.metadata.get(OPTIMIZER_FORMAT_KEY).map(String::as_str) {
        None => false,
        Some("2") => true,
        Some(other) => {
            return Err(bad(format!(
                "unknown optimizer file format `{other}` (this build reads 2)"
            )))
        }
    };
    // Per-parameter counts stay on the host; the other tensors are state.
    let mut param_steps = Vec::new();
    let mut state = Vec::new();
    for (name, h) in &sd.tensors {
        match name.strip_prefix(STEP_PREFIX).filter(|_| per_param) {
            Some(param) => {
                let n = match (&h.data, h.shape.as_slice()) {
                    (HostData::I64(v), []) => u64::try_from(v[0]).ok(),
                    _ => None,
                };
                let n = n.ok_or_else(|| bad(format!("`{name}` must be a non-negative i64 scalar")))?;
                param_steps.push((param.to_string(), n));
            }
            None => state.push((name, h)),
        }
    }
    if !per_param {
        // an older file: its shared count applies to every parameter with state
        let mut with_state: Vec<String> = state
            .iter()
            .filter_map(|(n, _)| n.split_once('.').map(|(_, p)| p.to_string()))
            .collect();
        with_state.sort();
        with_state.dedup();
        param_steps = with_state.into_iter().map(|p| (p, step)).collect();
    }
    // The state tensors are built on the parameters' device; `load_state` then moves each
    // to its own parameter's device (a no-op unless the parameters are spread over devices).
    let params = opt.params();
    let tensors = match params.first() {
        Some(p) => state
            .iter()
            .map(|(n, h)| Ok(((*n).clone(), h.to_tensor(p.device())?)))
            .collect::<Result<Vec<_>>>()?,
        None => match state.first() {
            Some((n, _)) => {
                return Err(bad(format!(
                    "state `{n}` names no parameter of this optimizer (it has none)"
                )))
            }
            None => Vec::new(),
        },
    };
    opt.load_state(&OptimizerState {
        kind,
        step,
        param_steps,
        lr,
        tensors,
    })?;
    Ok(sd.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::param;
    use crate::optim::{ParamGroup, Sgd};

    fn sgd(params: Vec<(String, Tensor)>) -> Sgd {
        Sgd::new(vec![ParamGroup::new(params, 0.0)], 0.1, 0.9, false).unwrap()
    }

    #[test]
    fn optimizer_state_goes_to_the_parameters_or_is_refused_without_them() {
        let dev = unigrad_cpu::cpu();
        let dir = std::env::temp_dir().join(format!("unigrad-ckpt-opt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w = param(Tensor::from_vec(vec![1.0f32, 2.0], &[2], &dev).unwrap());
        let mut full = sgd(vec![("w".into(), w.clone())]);
        w.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        full.step().unwrap(); // creates the momentum buffer
        let with_state = dir.join("full.safetensors");
        save_optimizer(&full, &with_state, &HashMap::new()).unwrap();

        let mut again = sgd(vec![("w".into(), w.clone())]);
        load_optimizer(&mut again, &with_state).unwrap();
        let st = again.state();
        assert_eq!(st.tensors.len(), 1);
        assert_eq!(st.tensors[0].0, "momentum_buffer.w");
        assert!(st.tensors[0].1.device().same(w.device()));
        assert_eq!(st.tensors[0].1.to_vec::<f32>().unwrap(), vec![2.0, 4.0]);

        let mut empty = sgd(Vec::new());
        let e = load_optimizer(&mut empty, &with_state).unwrap_err().to_string();
        assert!(e.contains("`momentum_buffer.w` names no parameter"), "{e}");
        let no_state = dir.join("empty.safetensors");
        save_optimizer(&empty, &no_state, &HashMap::new()).unwrap();
        load_optimizer(&mut empty, &no_state).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }
}
