//! Small helpers shared by the example programs' command-line front ends.
//!
//! Every example picks a device and a CPU thread count, trains for a number of steps and
//! reports metrics. These helpers give them one front end: [`CommonArgs`] (the shared
//! `--device` and `--threads` flags, flattened into each program's own arguments, and the
//! setup they imply), [`RunArgs`] (saving, resuming and logging a run), [`main_with`] (the error exit), [`Parsed`] with
//! [`options_from_flags!`](crate::options_from_flags) (a `--quick` preset that explicit flags
//! override), an `indicatif` progress bar showing the running loss and the step rate, and
//! machine-readable JSON lines on stdout that scripts (and CI logs) can parse. Progress bars
//! draw on stderr and hide themselves when stderr is not a terminal, so they never pollute
//! the JSON output or CI logs.

use std::io::Write;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use indicatif::{ProgressBar, ProgressStyle};
use unigrad::prelude::*;

/// What an example program's `run` returns: any error, printed by [`main_with`].
pub type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The flags every example program shares, flattened into its own arguments with
/// `#[command(flatten)]`: where to run and how many CPU worker threads to use.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Worker threads for the CPU backend (default: all cores; 2 for the benchmarks
    /// bench_step and bench_infer, so their timings compare across machines).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl CommonArgs {
    /// `--threads`, else `default`.
    pub fn threads_or(&self, default: usize) -> usize {
        self.threads.unwrap_or(default)
    }

    /// The program's setup: size the global CPU thread pool (`--threads`, else
    /// `default_threads`, else rayon's default of one thread per core), then open
    /// `--device`. Call once, before any tensor work.
    pub fn setup(&self, default_threads: Option<usize>) -> AnyResult<Device> {
        if let Some(n) = self.threads.or(default_threads) {
            rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
        }
        Ok(device_from_str(&self.device)?)
    }
}

/// The flags of the training programs (`train_lm`, `translate`, `vit`) that save, resume
/// and log a run, flattened into their arguments with `#[command(flatten)]`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Save the model here and the optimizer next to it (`<path>.opt`; translate also its
    /// BPE, `<path>.bpe.json`) at every evaluation and at the end.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Resume from a checkpoint written by --checkpoint (model, optimizer and step).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Write the training curve (one row per step) as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// No progress bar and no log lines on stderr; stdout has only the JSON line.
    #[arg(long)]
    pub quiet: bool,
}

/// The `main` of every example program: runs `run`, and on error prints
/// `<name>: error: <message>` on stderr and exits with status 1.
pub fn main_with(name: &str, run: impl FnOnce() -> AnyResult<()>) {
    if let Err(e) = run() {
        eprintln!("{name}: error: {e}");
        std::process::exit(1);
    }
}

/// Parsed command-line arguments together with where each value came from, so that a
/// preset (`--quick`) can give way to the flags the user typed.
pub struct Parsed<A> {
    /// The arguments.
    pub args: A,
    matches: ArgMatches,
}

impl<A: CommandFactory + FromArgMatches> Parsed<A> {
    /// Parse the process's command line (exits with clap's message on bad flags or `--help`).
    pub fn from_env() -> AnyResult<Parsed<A>> {
        let matches = A::command().get_matches();
        let args = A::from_arg_matches(&matches)?;
        Ok(Parsed { args, matches })
    }

    /// Whether the argument with id `id` (the field name) was typed on the command line.
    pub fn given(&self, id: &str) -> bool {
        self.matches.value_source(id) == Some(ValueSource::CommandLine)
    }
}

/// Build an options struct from command-line flags and a `--quick` preset.
///
/// `options_from_flags!(Ty, parsed, quick, [f1, f2, ...], { g: value, ... })` starts from
/// the preset `Ty::quick()` when `quick` is true and from `Ty::default()` otherwise, and is
/// `Ty { f1: .., f2: .., g: value, ..preset }`, where each listed field `fi` is the flag's
/// value (`parsed.args.fi`), except that with `quick` a flag that was not typed (see
/// [`Parsed::given`]) keeps the preset's value. The listed fields must be `Copy`. With
/// `run = <RunArgs>` after the field list, the fields `checkpoint`, `resume`, `csv` and
/// `quiet` come from those [`RunArgs`].
#[macro_export]
macro_rules! options_from_flags {
    ($ty:ident, $parsed:expr, $quick:expr, [$($f:ident),* $(,)?], run = $run:expr, { $($rest:tt)* }) => {
        $crate::options_from_flags!($ty, $parsed, $quick, [$($f),*], {
            checkpoint: $run.checkpoint.clone(),
            resume: $run.resume.clone(),
            csv: $run.csv.clone(),
            quiet: $run.quiet,
            $($rest)*
        })
    };
    ($ty:ident, $parsed:expr, $quick:expr, [$($f:ident),* $(,)?], { $($rest:tt)* }) => {{
        let preset = if $quick { $ty::quick() } else { $ty::default() };
        $ty {
            $($f: if !$quick || $parsed.given(stringify!($f)) { $parsed.args.$f } else { preset.$f },)*
            $($rest)*
            ..preset
        }
    }};
}

/// The template used by [`progress_bar`]: the prefix (what is running), elapsed time, the bar,
/// position, rate, time left, and the message, which [`set_loss`] fills with the loss.
pub const PROGRESS_TEMPLATE: &str =
    "{prefix:.bold} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} ({per_sec}, eta {eta}) {msg}";

/// A progress bar over `total` steps labelled `msg`, showing elapsed time, rate and ETA; call
/// [`set_loss`] (or `set_message`) to show the current loss.
pub fn progress_bar(total: u64, msg: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(PROGRESS_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let pb = ProgressBar::new(total).with_style(style);
    pb.set_prefix(msg.to_string());
    pb
}

/// Shows `loss` (4 decimals) in the bar's message.
pub fn set_loss(pb: &ProgressBar, loss: f64) {
    pb.set_message(format!("loss {loss:.4}"));
}

/// Prints `value` as one compact JSON line on stdout and flushes, so the line reaches a pipe
/// immediately. Returns the write error (for instance a closed pipe) instead of panicking.
pub fn print_json_line(value: &serde_json::Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    write_json_line(&mut out, value)?;
    out.flush()
}

/// Writes `value` as one compact JSON line to `out` (the testable core of
/// [`print_json_line`]).
pub fn write_json_line(out: &mut impl Write, value: &serde_json::Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_compact() {
        let mut buf = Vec::new();
        let v = serde_json::json!({"step": 3, "loss": 1.25, "tag": "a\nb"});
        write_json_line(&mut buf, &v).unwrap();
        write_json_line(&mut buf, &serde_json::json!([1, 2])).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let back: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(back, v);
        assert_eq!(lines[1], "[1,2]");
        print_json_line(&serde_json::json!({"ok": true})).unwrap();
    }

    #[test]
    fn progress_bar_tracks_position() {
        // The template must parse (otherwise the fallback style would be used silently).
        assert!(ProgressStyle::with_template(PROGRESS_TEMPLATE).is_ok());
        let pb = progress_bar(10, "train");
        pb.inc(3);
        set_loss(&pb, 0.123456);
        assert_eq!(pb.position(), 3);
        assert_eq!(pb.length(), Some(10));
        assert_eq!(pb.message(), "loss 0.1235");
        assert_eq!(pb.prefix(), "train");
        pb.finish_and_clear();
    }
}

/// The model and batch size flags of the benchmarks `bench_step` and `bench_infer`
/// (the same flags as `bench/transformer_ref.py`), flattened into their arguments:
/// the defaults are the reference workload, and the FFN (4×) and the heads (one per
/// 32 channels) follow `--d-model`.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct SizeArgs {
    /// Model width, a multiple of 32 (FFN 4×, heads d_model/32).
    #[arg(long, default_value_t = 128)]
    pub d_model: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Sequence length (and the position table's size).
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
}

impl SizeArgs {
    /// [`LmConfig::reference`] with `norm`, resized; errors name the bad flag.
    pub fn config(&self, norm: NormKind) -> AnyResult<LmConfig> {
        if self.d_model == 0 || self.d_model % 32 != 0 {
            return Err(format!(
                "--d-model must be a positive multiple of 32 (head dim 32), got {}",
                self.d_model
            )
            .into());
        }
        for (flag, v) in [("--layers", self.layers), ("--seq", self.seq), ("--batch", self.batch)] {
            if v == 0 {
                return Err(format!("{flag} must be at least 1").into());
            }
        }
        Ok(LmConfig {
            d_model: self.d_model,
            heads: self.d_model / 32,
            d_ff: 4 * self.d_model,
            layers: self.layers,
            max_seq: self.seq,
            ..LmConfig::reference(norm)
        })
    }
}
