//! Train a German→English encoder-decoder Transformer and score it with BLEU.
//!
//! ```sh
//! cargo run --release -p unigrad-examples --example translate                      # post-norm, LayerNorm
//! cargo run --release -p unigrad-examples --example translate -- --norm un --beam 5
//! cargo run --release -p unigrad-examples --example translate -- --pre-norm --norm bn --steps 3000
//! cargo run --release -p unigrad-examples --example translate -- --checkpoint mt.safetensors
//! cargo run --release -p unigrad-examples --example translate -- --resume mt.safetensors --steps 2400
//! ```
//!
//! The recipe (joint BPE learned on the training split, label smoothing 0.1, Adam with the
//! inverse-sqrt schedule, padding masks to attention and norms, greedy and beam decoding,
//! corpus BLEU-4 on the test split) is documented in `unigrad_examples::train::translate`.
//! Progress shows on stderr; the last stdout line is one JSON object with the metrics.

use unigrad::prelude::*;
use unigrad_examples::cli::{main_with, print_json_line, CommonArgs, Parsed, RunArgs};
use unigrad_examples::options_from_flags;
use unigrad_examples::train::translate::{train_translate, TranslateOptions};

/// Train a German→English Transformer on the bundled Ding sentence pairs; report test BLEU.
#[derive(clap::Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    /// Normalization at every norm site: ln, rms, bn, pn or un.
    #[arg(long, default_value = "ln")]
    norm: String,
    /// Pre-norm layers (default: post-norm, as the paper's IWSLT models).
    #[arg(long)]
    pre_norm: bool,
    /// Model width.
    #[arg(long, default_value_t = defaults().d_model)]
    d_model: usize,
    /// Attention heads.
    #[arg(long, default_value_t = defaults().heads)]
    heads: usize,
    /// Feed-forward width.
    #[arg(long, default_value_t = defaults().d_ff)]
    d_ff: usize,
    /// Encoder layers.
    #[arg(long, default_value_t = defaults().enc_layers)]
    enc_layers: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = defaults().dec_layers)]
    dec_layers: usize,
    /// Dropout.
    #[arg(long, default_value_t = defaults().dropout)]
    dropout: f64,
    /// Joint BPE vocabulary size, learned on the training split.
    #[arg(long, default_value_t = defaults().vocab)]
    vocab: usize,
    /// Keep sentence pairs whose two sides have at most this many bytes.
    #[arg(long, default_value_t = defaults().max_bytes)]
    max_bytes: usize,
    /// Longest tokenized sentence.
    #[arg(long, default_value_t = defaults().max_len)]
    max_len: usize,
    /// Sentence pairs per batch.
    #[arg(long, default_value_t = defaults().batch)]
    batch: usize,
    /// Training steps (total, including steps done before a --resume).
    #[arg(long, default_value_t = defaults().steps)]
    steps: u64,
    /// Peak learning rate (inverse-sqrt schedule).
    #[arg(long, default_value_t = defaults().lr)]
    lr: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = defaults().warmup)]
    warmup: u64,
    /// Label smoothing.
    #[arg(long, default_value_t = defaults().label_smoothing)]
    label_smoothing: f64,
    /// Decoupled weight decay on weight matrices.
    #[arg(long, default_value_t = defaults().weight_decay)]
    weight_decay: f64,
    /// Gradient-norm clipping (0: off, as fairseq's IWSLT recipe).
    #[arg(long, default_value_t = defaults().clip)]
    clip: f64,
    /// UN / PowerNorm warmup as a fraction of --steps.
    #[arg(long, default_value_t = defaults().norm_warmup_frac)]
    norm_warmup_frac: f64,
    /// Beam size (0: greedy only).
    #[arg(long, default_value_t = defaults().beam)]
    beam: usize,
    /// Length penalty α of the beam score logprob / len^α.
    #[arg(long, default_value_t = defaults().len_penalty)]
    len_penalty: f64,
    /// Decode only the first N test sentences.
    #[arg(long)]
    max_test: Option<usize>,
    /// Train on the first N training pairs only.
    #[arg(long)]
    max_train: Option<usize>,
    /// Sentences decoded together.
    #[arg(long, default_value_t = defaults().decode_batch)]
    decode_batch: usize,
    /// Validate (and checkpoint) every N steps (0: only at the end).
    #[arg(long, default_value_t = defaults().eval_every)]
    eval_every: u64,
    /// Random seed.
    #[arg(long, default_value_t = defaults().seed)]
    seed: u64,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    run: RunArgs,
    /// Test translations to print at the end.
    #[arg(long, default_value_t = defaults().show)]
    show: usize,
    /// Tiny model and few steps (smoke test); explicit flags still apply on top.
    #[arg(long)]
    quick: bool,
}

/// The library defaults, which the flags mirror.
fn defaults() -> TranslateOptions {
    TranslateOptions::default()
}

fn main() {
    main_with("translate", || {
        let p = Parsed::<Args>::from_env()?;
        let a = &p.args;
        let norm: NormKind = a.norm.parse()?;
        let o = options_from_flags!(
            TranslateOptions,
            p,
            a.quick,
            [max_bytes, vocab, max_len, d_model, heads, d_ff, enc_layers, dec_layers, dropout, norm_warmup_frac, batch, steps, lr, warmup, label_smoothing, weight_decay, clip, beam, len_penalty, decode_batch, eval_every, show, max_test, max_train],
            run = a.run,
            {
                norm,
                pre_norm: a.pre_norm,
                seed: a.seed,
                label: format!("translate --norm {norm}"),
            }
        );
        let result = train_translate(&o, &a.common.setup(None)?)?;
        print_json_line(&serde_json::to_value(&result)?)?;
        Ok(())
    });
}
