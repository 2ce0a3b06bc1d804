//! Support code shared by the unigrad example programs.
//!
//! The examples (a byte-level Shakespeare language model, a Fashion-MNIST vision transformer
//! and a German→English translation model) all need the same plumbing that has nothing to do
//! with automatic differentiation: reading the bundled datasets, tokenizing text, scoring
//! translations, plotting learning curves and printing progress. Keeping that code here lets
//! it be tested on its own and keeps every example program short. The tensor code (the
//! [`train`] loops, the device setup in [`cli`]) uses unigrad through the `unigrad` facade
//! crate alone, as a user's program would.
//!
//! * [`data`]: loaders for the datasets shipped in the repository's `data/` folder.
//! * [`bpe`]: a byte-pair-encoding subword tokenizer.
//! * [`bleu`]: corpus BLEU-4 (Papineni et al., 2002) with a 13a-style tokenizer.
//! * [`plot`]: a dependency-free SVG line-chart writer.
//! * [`report`]: a self-contained HTML report (inline SVG charts, print layout).
//! * [`csv`]: an atomic CSV writer for training logs.
//! * [`cli`]: the shared `--device` / `--threads` flags and setup, progress bars and
//!   JSON-lines output.
//! * [`rng`]: a small seeded random number generator, so runs are reproducible.
//! * [`train`]: the training loops of `translate`, `vit` and `paper_table` (these use the
//!   tensor crates).

#![warn(missing_docs)]

pub mod bleu;
pub mod bpe;
pub mod cli;
pub mod csv;
pub mod data;
pub mod error;
pub mod plot;
pub mod report;
pub mod rng;
pub mod train;

pub use error::{Error, Result};

use std::path::PathBuf;

/// Environment variable that, when set, overrides [`data_dir`].
pub const DATA_DIR_ENV: &str = "UNIGRAD_DATA_DIR";

/// The folder holding the bundled datasets.
///
/// Defaults to the repository's own `data/` folder (found relative to this crate's manifest at
/// compile time, then canonicalised), so the examples work from a fresh checkout without any
/// download. Set the environment variable [`UNIGRAD_DATA_DIR`](DATA_DIR_ENV) to use another
/// folder with the same layout. If the path cannot be canonicalised (for instance because it
/// does not exist), it is returned as is and the loaders report the missing files.
pub fn data_dir() -> PathBuf {
    let raw = match std::env::var_os(DATA_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../data")),
    };
    std::fs::canonicalize(&raw).unwrap_or(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_points_at_bundled_data() {
        // Only meaningful when the override is not set in the test environment.
        if std::env::var_os(DATA_DIR_ENV).is_none() {
            let dir = data_dir();
            assert!(dir.is_absolute());
            assert!(dir.join("shakespeare").is_dir(), "{}", dir.display());
            assert!(dir.join("fashion-mnist").is_dir());
            assert!(dir.join("de-en").is_dir());
        }
    }
}
