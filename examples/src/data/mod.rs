//! Loaders for the datasets bundled in the repository's `data/` folder.
//!
//! Every dataset is small, real and redistributable, and ships with the source tree, so the
//! examples never download anything. Each submodule reads one dataset into plain Rust vectors
//! (no tensor types), validates it, and applies the split documented in the dataset's README.
//!
//! * [`text`]: Shakespeare as bytes, for byte-level language modelling.
//! * [`mnist`]: the Fashion-MNIST subset in gzip IDX format, for image classification.
//! * [`translation`]: German→English sentence pairs, for sequence-to-sequence models.

pub mod mnist;
pub mod text;
pub mod translation;
