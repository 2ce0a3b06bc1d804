//! Train a small Vision Transformer on the bundled Fashion-MNIST subset.
//!
//! ```sh
//! cargo run --release -p unigrad-examples --example vit                    # LayerNorm, ~10 epochs
//! cargo run --release -p unigrad-examples --example vit -- --norm un --steps 1200
//! cargo run --release -p unigrad-examples --example vit -- --checkpoint vit.safetensors
//! cargo run --release -p unigrad-examples --example vit -- --resume vit.safetensors --steps 1200
//! ```
//!
//! 28×28 images, 7×7 patches, pre-norm blocks; the recipe is documented in
//! `unigrad_examples::train::vit`. Progress shows on stderr; the last stdout line is one
//! JSON object with the metrics (test accuracy in percent).

use unigrad::prelude::*;
use unigrad_examples::cli::{main_with, print_json_line, CommonArgs, Parsed, RunArgs};
use unigrad_examples::options_from_flags;
use unigrad_examples::train::vit::{train_vit, VitOptions};

/// Train a Vision Transformer on Fashion-MNIST (8,000 train / 2,000 test images); report test accuracy.
#[derive(clap::Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    /// Normalization at every norm site: ln, rms, bn, pn or un.
    #[arg(long, default_value = "ln")]
    norm: String,
    /// Post-norm blocks instead of pre-norm.
    #[arg(long)]
    post_norm: bool,
    /// Patch side (must divide 28).
    #[arg(long, default_value_t = defaults().patch)]
    patch: usize,
    /// Model width.
    #[arg(long, default_value_t = defaults().d_model)]
    d_model: usize,
    /// Attention heads.
    #[arg(long, default_value_t = defaults().heads)]
    heads: usize,
    /// Feed-forward width.
    #[arg(long, default_value_t = defaults().d_ff)]
    d_ff: usize,
    /// Blocks.
    #[arg(long, default_value_t = defaults().layers)]
    layers: usize,
    /// Dropout.
    #[arg(long, default_value_t = defaults().dropout)]
    dropout: f64,
    /// Images per batch.
    #[arg(long, default_value_t = defaults().batch)]
    batch: usize,
    /// Training steps (total, including steps done before a --resume).
    #[arg(long, default_value_t = defaults().steps)]
    steps: u64,
    /// Peak learning rate (AdamW, warmup + cosine).
    #[arg(long, default_value_t = defaults().lr)]
    lr: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = defaults().warmup)]
    warmup: u64,
    /// AdamW weight decay on weight matrices.
    #[arg(long, default_value_t = defaults().weight_decay)]
    weight_decay: f64,
    /// Label smoothing.
    #[arg(long, default_value_t = defaults().label_smoothing)]
    label_smoothing: f64,
    /// Gradient-norm clipping (0: off).
    #[arg(long, default_value_t = defaults().clip)]
    clip: f64,
    /// No random horizontal flips.
    #[arg(long)]
    no_flip: bool,
    /// UN / PowerNorm warmup as a fraction of --steps.
    #[arg(long, default_value_t = defaults().norm_warmup_frac)]
    norm_warmup_frac: f64,
    /// Train on the first N images only.
    #[arg(long)]
    max_train: Option<usize>,
    /// Test on the first N images only.
    #[arg(long)]
    max_test: Option<usize>,
    /// Test (and checkpoint) every N steps (0: only at the end).
    #[arg(long, default_value_t = defaults().eval_every)]
    eval_every: u64,
    /// Random seed.
    #[arg(long, default_value_t = defaults().seed)]
    seed: u64,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    run: RunArgs,
    /// Tiny model and few steps (smoke test); explicit flags still apply on top.
    #[arg(long)]
    quick: bool,
}

/// The library defaults, which the flags mirror.
fn defaults() -> VitOptions {
    VitOptions::default()
}

fn main() {
    main_with("vit", || {
        let p = Parsed::<Args>::from_env()?;
        let a = &p.args;
        let norm: NormKind = a.norm.parse()?;
        let o = options_from_flags!(
            VitOptions,
            p,
            a.quick,
            [patch, d_model, heads, d_ff, layers, dropout, batch, steps, lr, warmup, weight_decay, label_smoothing, clip, norm_warmup_frac, eval_every, max_test, max_train],
            run = a.run,
            {
                norm,
                pre_norm: !a.post_norm,
                flip: !a.no_flip,
                seed: a.seed,
                label: format!("vit --norm {norm}"),
            }
        );
        let result = train_vit(&o, &a.common.setup(None)?)?;
        print_json_line(&serde_json::to_value(&result)?)?;
        Ok(())
    });
}
