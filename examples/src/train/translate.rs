//! German→English translation with an encoder-decoder Transformer.
//!
//! The recipe is a miniature of the fairseq IWSLT14 de-en setup that the UN paper uses:
//!
//! * **Data**: the bundled Ding sentence pairs (`data/de-en`), split as the data README
//!   says (last 500 pairs test, 500 before them validation), both sides at most
//!   `max_bytes` bytes (48 by default: 8,164 training and 268 test pairs; the README
//!   suggests 64 for CPU runs, which keeps 11,698 / 386 at a higher cost per step).
//! * **Tokens**: one joint BPE vocabulary learned on the *training* split only (German and
//!   English sentences together), shared by source and target. The source gets EOS
//!   appended; the decoder input is `BOS y`, the target `y EOS`.
//! * **Model**: [`Seq2Seq`] with sinusoidal positions and `√d`-scaled embeddings, post-norm
//!   layers by default (pre-norm selectable), the chosen norm at every norm site. Padding
//!   masks go to attention *and* to the norms, so BatchNorm, PowerNorm and UN compute
//!   their statistics over real tokens only.
//! * **Training**: label-smoothed cross-entropy (0.1, padding ignored), Adam with
//!   `β = (0.9, 0.98)`, fairseq's inverse-sqrt schedule with linear warmup, length-bucketed
//!   batches reshuffled every epoch from the seed.
//! * **Evaluation**: teacher-forced validation loss, then greedy and beam-search decoding
//!   ([`super::beam`]) of the test split, scored with corpus BLEU-4 (13a tokenization,
//!   brevity penalty; [`crate::bleu::corpus_bleu_13a`]) against the raw references.
//!
//! Decoding runs the decoder on the whole prefix at every step (the model keeps no key /
//! value cache), batching all test sentences and all their beams into one call per step,
//! and applies the output projection to the last position only.

use super::beam::{beam_search, greedy_search, BeamConfig};
use super::{
    adam_resumed, eval_due, ids_tensor, norm_config, save_state, tail_mean, update, Curve, Reporter, TaskKind,
    TrainError, TrainResult,
};
use crate::bleu::{corpus_bleu_13a, BleuScore};
use crate::bpe::{Bpe, BOS, EOS, PAD};
use crate::data::translation::{load_de_en, LoadOptions, Pair};
use crate::rng::Rng;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use unigrad::nn::attention::attention_bias;
use unigrad::nn::PositionKind;
use unigrad::prelude::*;

/// Options of [`train_translate`]; `Default` is the `translate` example's default run.
#[derive(Clone, Debug)]
pub struct TranslateOptions {
    /// Folder with `de-en/ding-de-en.tsv`.
    pub data_dir: PathBuf,
    /// Keep pairs whose two sides have at most this many UTF-8 bytes.
    pub max_bytes: usize,
    /// Joint BPE vocabulary size (special tokens and characters included).
    pub vocab: usize,
    /// Longest tokenized sentence (training pairs beyond it are dropped, test sources cut).
    pub max_len: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Encoder layers.
    pub enc_layers: usize,
    /// Decoder layers.
    pub dec_layers: usize,
    /// Dropout.
    pub dropout: f64,
    /// Normalization at every norm site.
    pub norm: NormKind,
    /// Pre-norm layers (default post-norm, as the paper's IWSLT models).
    pub pre_norm: bool,
    /// UN / PowerNorm warmup as a fraction of `steps` (see [`super::norm_config`]).
    pub norm_warmup_frac: f64,
    /// Sentence pairs per batch.
    pub batch: usize,
    /// Total optimizer updates (including those before a resume).
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warmup updates of the inverse-sqrt schedule.
    pub warmup: u64,
    /// Label smoothing of the training loss.
    pub label_smoothing: f64,
    /// Weight decay (decoupled, weight matrices only).
    pub weight_decay: f64,
    /// Gradient-norm clipping (0: off).
    pub clip: f64,
    /// Beam size (0: skip beam search).
    pub beam: usize,
    /// Length-penalty exponent of the beam score.
    pub len_penalty: f64,
    /// Decode only the first N test sentences (None: all).
    pub max_test: Option<usize>,
    /// Use only the first N training pairs (None: all).
    pub max_train: Option<usize>,
    /// Sentences decoded together.
    pub decode_batch: usize,
    /// Validate every N steps (0: only at the end).
    pub eval_every: u64,
    /// Random seed (initialisation, batches, dropout).
    pub seed: u64,
    /// Save model, optimizer and BPE here (`<path>`, `<path>.opt`, `<path>.bpe.json`) at
    /// every validation and at the end.
    pub checkpoint: Option<PathBuf>,
    /// Resume from a checkpoint written by `checkpoint`.
    pub resume: Option<PathBuf>,
    /// Write the training curve as CSV here.
    pub csv: Option<PathBuf>,
    /// Test translations to show on stderr at the end.
    pub show: usize,
    /// No progress bar or log lines.
    pub quiet: bool,
    /// Progress-bar label.
    pub label: String,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            data_dir: crate::data_dir(),
            max_bytes: 48,
            vocab: 1000,
            max_len: 48,
            d_model: 128,
            heads: 4,
            d_ff: 256,
            enc_layers: 2,
            dec_layers: 2,
            dropout: 0.1,
            norm: NormKind::LayerNorm,
            pre_norm: false,
            norm_warmup_frac: 0.1,
            batch: 64,
            steps: 1500,
            lr: 2e-3,
            warmup: 200,
            label_smoothing: 0.1,
            weight_decay: 1e-4,
            clip: 0.0,
            beam: 4,
            len_penalty: 1.0,
            max_test: None,
            max_train: None,
            decode_batch: 128,
            eval_every: 500,
            seed: 1,
            checkpoint: None,
            resume: None,
            csv: None,
            show: 3,
            quiet: false,
            label: "translate".into(),
        }
    }
}

impl TranslateOptions {
    /// A tiny run for smoke tests (seconds): small model and vocabulary, few steps, 32 test
    /// sentences.
    pub fn quick() -> Self {
        TranslateOptions {
            vocab: 400,
            d_model: 32,
            heads: 2,
            d_ff: 64,
            enc_layers: 1,
            dec_layers: 1,
            batch: 16,
            steps: 20,
            warmup: 5,
            beam: 2,
            max_test: Some(32),
            max_train: Some(2000),
            eval_every: 0,
            show: 0,
            ..TranslateOptions::default()
        }
    }

    fn model_config(&self, vocab: usize, steps: u64) -> Seq2SeqConfig {
        Seq2SeqConfig {
            src_vocab: vocab,
            tgt_vocab: vocab,
            d_model: self.d_model,
            heads: self.heads,
            d_ff: self.d_ff,
            enc_layers: self.enc_layers,
            dec_layers: self.dec_layers,
            max_len: self.max_len + 1,
            norm: norm_config(self.norm, TaskKind::Language, steps, Some(self.norm_warmup_frac)),
            pre_norm: self.pre_norm,
            positions: PositionKind::Sinusoidal,
            dropout: self.dropout,
            ln_scaling: false,
            pad_id: Some(PAD as usize),
            scale_embeddings: true,
        }
    }
}

/// Metrics of one translation run.
#[derive(Clone, Debug, Serialize)]
pub struct TranslateResult {
    /// Norm short name.
    pub norm: String,
    /// Pre-norm (`true`) or post-norm layers.
    pub pre_norm: bool,
    /// Total updates.
    pub steps: u64,
    /// Updates done in this process (fewer after a resume).
    pub steps_this_run: u64,
    /// Model parameters.
    pub params: usize,
    /// BPE vocabulary size.
    pub vocab: usize,
    /// Training pairs used.
    pub train_pairs: usize,
    /// Test pairs decoded.
    pub test_pairs: usize,
    /// Mean label-smoothed training loss of the last 50 updates (nats per token).
    pub train_loss: f64,
    /// Teacher-forced validation cross-entropy without smoothing (nats per token).
    pub valid_loss: f64,
    /// `exp(valid_loss)`.
    pub valid_ppl: f64,
    /// Test BLEU of greedy decoding.
    pub bleu_greedy: f64,
    /// Test BLEU of beam search (NaN when skipped).
    pub bleu_beam: f64,
    /// sacrebleu-style summary of the greedy score.
    pub bleu_greedy_detail: String,
    /// sacrebleu-style summary of the beam score.
    pub bleu_beam_detail: String,
    /// Beam size.
    pub beam: usize,
    /// Length penalty.
    pub len_penalty: f64,
    /// Target tokens per second during training.
    pub tokens_per_s: f64,
    /// Seconds spent in training updates.
    pub train_s: f64,
    /// Seconds of greedy decoding.
    pub greedy_s: f64,
    /// Seconds of beam decoding.
    pub beam_s: f64,
    /// Device name.
    pub device: String,
    /// Seed.
    pub seed: u64,
    /// Wall-clock seconds of the whole run.
    pub wall_s: f64,
}

/// A tokenized pair: `src` ends in EOS, `tgt` has neither BOS nor EOS.
#[derive(Clone, Debug)]
struct Example {
    src: Vec<u32>,
    tgt: Vec<u32>,
}

/// One padded batch on the device.
struct Batch {
    src: Tensor,
    src_pad: Tensor,
    tgt_in: Tensor,
    tgt_out: Tensor,
    tgt_pad: Tensor,
    tokens: usize,
}

fn pad_mask(lens: &[usize], width: usize, dev: &Device) -> TrainResult<Tensor> {
    let v: Vec<f32> = lens
        .iter()
        .flat_map(|&l| (0..width).map(move |j| if j < l { 0.0 } else { 1.0 }))
        .collect();
    Ok(Tensor::from_vec(v, &[lens.len(), width], dev)?)
}

fn collate(examples: &[&Example], dev: &Device) -> TrainResult<Batch> {
    let b = examples.len();
    let s = examples.iter().map(|e| e.src.len()).max().unwrap_or(1).max(1);
    let t = examples.iter().map(|e| e.tgt.len() + 1).max().unwrap_or(1);
    let (mut src, mut tin, mut tout) = (vec![PAD; b * s], vec![PAD; b * t], vec![PAD; b * t]);
    for (i, e) in examples.iter().enumerate() {
        src[i * s..i * s + e.src.len()].copy_from_slice(&e.src);
        tin[i * t] = BOS;
        tin[i * t + 1..i * t + 1 + e.tgt.len()].copy_from_slice(&e.tgt);
        tout[i * t..i * t + e.tgt.len()].copy_from_slice(&e.tgt);
        tout[i * t + e.tgt.len()] = EOS;
    }
    let src_lens: Vec<usize> = examples.iter().map(|e| e.src.len()).collect();
    let tgt_lens: Vec<usize> = examples.iter().map(|e| e.tgt.len() + 1).collect();
    Ok(Batch {
        src: ids_tensor(&src, &[b, s], dev)?,
        src_pad: pad_mask(&src_lens, s, dev)?,
        tgt_in: ids_tensor(&tin, &[b, t], dev)?,
        tgt_out: ids_tensor(&tout, &[b, t], dev)?,
        tgt_pad: pad_mask(&tgt_lens, t, dev)?,
        tokens: tgt_lens.iter().sum(),
    })
}

/// The batches of epoch `epoch`: indices shuffled from `(seed, epoch)`, sorted by length
/// inside pools of 32 batches (less padding), batch order shuffled again.
fn epoch_batches(lens: &[usize], batch: usize, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let mut rng = Rng::new(seed ^ (epoch.wrapping_add(1)).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut idx = rng.permutation(lens.len());
    let pool = batch * 32;
    let mut batches = Vec::new();
    for chunk in idx.chunks_mut(pool) {
        chunk.sort_by_key(|&i| lens[i]);
        batches.extend(chunk.chunks(batch).map(|c| c.to_vec()));
    }
    rng.shuffle(&mut batches);
    batches
}

/// Next-token log-probabilities at the last position of `tgt [R, t]` given the memory of
/// each row's sentence: the decoder of [`Seq2Seq::decode`] with the output projection
/// applied to the last position only. Eval mode only (it applies no dropout).
fn last_logprobs(model: &Seq2Seq, tgt: &Tensor, memory: &Tensor, src_pad: &Tensor) -> TrainResult<Tensor> {
    let cfg = model.config();
    let (r, t, s) = (tgt.shape()[0], tgt.shape()[1], memory.shape()[1]);
    let mut x = model.tgt_tok.forward(tgt)?;
    if cfg.scale_embeddings {
        x = x.mul_scalar((cfg.d_model as f64).sqrt())?;
    }
    x = x.add(&model.pos.forward(0, t)?)?;
    let self_bias = attention_bias(true, None, t, t, x.dtype(), x.device())?;
    let cross_bias = attention_bias(false, Some(src_pad), t, s, x.dtype(), x.device())?;
    for l in &model.decoder {
        x = l.forward(&x, memory, self_bias.as_ref(), cross_bias.as_ref(), None)?;
    }
    let mut x = x.narrow(1, t - 1, 1)?;
    if let Some(n) = &model.dec_norm {
        x = n.forward(&x, None)?;
    }
    Ok(model.head.forward(&x)?.reshape(&[r, cfg.tgt_vocab])?.log_softmax(-1)?)
}

/// How a test set is decoded.
#[derive(Clone, Copy, Debug)]
pub enum Decoding {
    /// Most likely token at every step.
    Greedy,
    /// Beam search.
    Beam(BeamConfig),
}

/// Translate `sources` (token ids ending in EOS) in chunks of `chunk` sentences. Returns the
/// generated ids (without BOS/EOS). Puts the model in eval mode.
pub fn translate_batch(
    model: &mut Seq2Seq,
    sources: &[Vec<u32>],
    decoding: Decoding,
    chunk: usize,
    dev: &Device,
) -> TrainResult<Vec<Vec<u32>>> {
    model.eval();
    let model = &*model;
    let cap = model.config().max_len;
    let mut out = Vec::with_capacity(sources.len());
    for part in sources.chunks(chunk.max(1)) {
        let b = part.len();
        let s = part.iter().map(|x| x.len()).max().unwrap_or(1).max(1);
        let mut flat = vec![PAD; b * s];
        for (i, x) in part.iter().enumerate() {
            flat[i * s..i * s + x.len()].copy_from_slice(x);
        }
        let lens: Vec<usize> = part.iter().map(|x| x.len()).collect();
        let src = ids_tensor(&flat, &[b, s], dev)?;
        let src_pad = pad_mask(&lens, s, dev)?;
        // generated tokens (EOS included): 1.5 × source + 5, within the position table
        let max_lens: Vec<usize> = lens.iter().map(|&l| (l * 3 / 2 + 5).min(cap)).collect();
        let decoded = no_grad(|| -> TrainResult<Vec<Vec<i64>>> {
            let memory = model.encode(&src, Some(&src_pad))?;
            let step = |sents: &[usize], prefixes: &[i64], t: usize| -> TrainResult<Vec<f32>> {
                let rows = sents.len();
                let idx = Tensor::from_vec(sents.iter().map(|&i| i as i64).collect::<Vec<_>>(), &[rows], dev)?;
                let mem = memory.index_select(0, &idx)?;
                let pad = src_pad.index_select(0, &idx)?;
                let tgt = Tensor::from_vec(prefixes.to_vec(), &[rows, t], dev)?;
                let lp = last_logprobs(model, &tgt, &mem, &pad)?;
                let mut v = lp.to_dtype(DType::F32)?.to_vec::<f32>()?;
                let vocab = v.len() / rows.max(1);
                for r in 0..rows {
                    v[r * vocab + PAD as usize] = f32::NEG_INFINITY;
                    v[r * vocab + BOS as usize] = f32::NEG_INFINITY;
                }
                Ok(v)
            };
            match decoding {
                Decoding::Greedy => greedy_search(BOS as i64, EOS as i64, &max_lens, step),
                Decoding::Beam(cfg) => Ok(beam_search(&cfg, &max_lens, step)?
                    .into_iter()
                    .map(|h| h.tokens)
                    .collect()),
            }
        })?;
        out.extend(
            decoded
                .into_iter()
                .map(|ids| ids.into_iter().map(|i| i.max(0) as u32).collect::<Vec<u32>>()),
        );
    }
    Ok(out)
}

/// Mean teacher-forced cross-entropy (no smoothing) over `examples`, in nats per token.
fn valid_loss(model: &mut Seq2Seq, examples: &[Example], batch: usize, dev: &Device) -> TrainResult<f64> {
    model.eval();
    let result = no_grad(|| -> TrainResult<f64> {
        let (mut total, mut count) = (0.0, 0usize);
        for chunk in examples.chunks(batch.max(1)) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let b = collate(&refs, dev)?;
            let logits = model.forward(&b.src, &b.tgt_in, Some(&b.src_pad), Some(&b.tgt_pad))?;
            let l = cross_entropy(&logits, &b.tgt_out, Some(PAD as i64), 0.0)?.to_scalar()?;
            total += l * b.tokens as f64;
            count += b.tokens;
        }
        Ok(total / count.max(1) as f64)
    });
    model.train();
    result
}

fn bpe_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".bpe.json");
    PathBuf::from(s)
}

fn config_string(cfg: &Seq2SeqConfig) -> String {
    format!(
        "seq2seq vocab={} d_model={} heads={} d_ff={} enc={} dec={} max_len={} norm={} pre_norm={} dropout={}",
        cfg.src_vocab,
        cfg.d_model,
        cfg.heads,
        cfg.d_ff,
        cfg.enc_layers,
        cfg.dec_layers,
        cfg.max_len,
        cfg.norm.kind,
        cfg.pre_norm,
        cfg.dropout
    )
}

fn encode_pair(bpe: &Bpe, p: &Pair) -> Example {
    let mut src = bpe.encode(&p.src);
    src.push(EOS);
    Example {
        src,
        tgt: bpe.encode(&p.tgt),
    }
}

fn bleu_of(bpe: &Bpe, hyps: &[Vec<u32>], refs: &[&str]) -> TrainResult<(BleuScore, Vec<String>)> {
    let text: Vec<String> = hyps.iter().map(|h| bpe.decode(h)).collect();
    Ok((corpus_bleu_13a(&text, refs)?, text))
}

/// Train a translation model and score it on the test split. See the module docs.
pub fn train_translate(o: &TranslateOptions, dev: &Device) -> TrainResult<TranslateResult> {
    let t_all = Instant::now();
    if o.batch == 0 || o.max_len < 2 {
        return Err(TrainError::Invalid("batch must be >= 1 and max_len >= 2".into()));
    }
    let splits = load_de_en(
        &o.data_dir,
        &LoadOptions {
            max_bytes: Some(o.max_bytes),
            max_words: None,
        },
    )?;
    let mut train_pairs = splits.train;
    if let Some(m) = o.max_train {
        train_pairs.truncate(m);
    }
    let mut test_pairs = splits.test;
    if let Some(m) = o.max_test {
        test_pairs.truncate(m);
    }
    let valid_pairs = splits.valid;
    // BPE from the training split only; a resumed run reuses the saved one
    let bpe = match o.resume.as_deref().map(bpe_path) {
        Some(p) => Bpe::load(&p)?,
        None => Bpe::train(
            train_pairs.iter().flat_map(|p| [p.src.as_str(), p.tgt.as_str()]),
            o.vocab,
        )?,
    };
    let vocab = bpe.vocab_size();
    let fits = |e: &Example| e.src.len() <= o.max_len && e.tgt.len() < o.max_len;
    let train: Vec<Example> = train_pairs.iter().map(|p| encode_pair(&bpe, p)).filter(fits).collect();
    let valid: Vec<Example> = valid_pairs.iter().map(|p| encode_pair(&bpe, p)).filter(fits).collect();
    if train.is_empty() {
        return Err(TrainError::Invalid("no training pair fits the length limits".into()));
    }
    let test_src: Vec<Vec<u32>> = test_pairs
        .iter()
        .map(|p| {
            let mut e = encode_pair(&bpe, p).src;
            if e.len() > o.max_len {
                e.truncate(o.max_len - 1);
                e.push(EOS);
            }
            e
        })
        .collect();
    let test_refs: Vec<&str> = test_pairs.iter().map(|p| p.tgt.as_str()).collect();

    manual_seed(o.seed);
    let cfg = o.model_config(vocab, o.steps);
    let mut model = Seq2Seq::new(cfg, DType::F32, dev)?;
    let sched = LrSchedule::InverseSqrt {
        lr: o.lr,
        warmup: o.warmup.max(1),
        warmup_init_lr: 1e-7,
    };
    sched.validate()?;
    let cfg_str = config_string(&cfg);
    let adam = AdamConfig {
        beta2: 0.98,
        ..AdamConfig::adamw(o.lr)
    };
    let (mut opt, start) = adam_resumed(&model, adam, o.weight_decay, o.resume.as_deref(), &cfg_str)?;
    manual_seed(o.seed.wrapping_add(start)); // dropout stream of this (possibly resumed) run

    let rep = Reporter::new(o.steps, &o.label, o.quiet);
    rep.log(format!(
        "translate: {} params ({cfg_str}) on {dev}; BPE vocab {vocab}; {} train / {} valid / {} test pairs",
        model.param_count(),
        train.len(),
        valid.len(),
        test_pairs.len()
    ));
    let mut curve = Curve::create(o.csv.as_deref(), "valid_loss", &["tokens_per_s"])?;
    let lens: Vec<usize> = train.iter().map(|e| e.src.len().max(e.tgt.len() + 1)).collect();
    // replay the batch stream up to `start`
    let (mut epoch, mut order, mut pos) = (0u64, epoch_batches(&lens, o.batch, o.seed, 0), 0usize);
    for _ in 0..start {
        pos += 1;
        if pos == order.len() {
            epoch += 1;
            order = epoch_batches(&lens, o.batch, o.seed, epoch);
            pos = 0;
        }
    }
    rep.bar().set_position(start);
    let (mut losses, mut train_s, mut tokens) = (Vec::new(), 0.0f64, 0usize);
    let mut last_valid = f64::NAN;
    model.train();
    for step in start..o.steps {
        let ids = &order[pos];
        let refs: Vec<&Example> = ids.iter().map(|&i| &train[i]).collect();
        let t0 = Instant::now();
        let b = collate(&refs, dev)?;
        let lr = sched.lr_at(step);
        let done = step + 1;
        let logits = model.forward(&b.src, &b.tgt_in, Some(&b.src_pad), Some(&b.tgt_pad))?;
        let loss = cross_entropy(&logits, &b.tgt_out, Some(PAD as i64), o.label_smoothing)?;
        let lv = update(&mut opt, &loss, lr, o.clip, done)?;
        train_s += t0.elapsed().as_secs_f64();
        tokens += b.tokens;
        losses.push(lv);
        pos += 1;
        if pos == order.len() {
            epoch += 1;
            order = epoch_batches(&lens, o.batch, o.seed, epoch);
            pos = 0;
        }
        let tps = tokens as f64 / train_s.max(1e-9);
        rep.bar().set_message(format!("loss {lv:.3} | {tps:.0} tok/s"));
        rep.bar().inc(1);
        let mut val = None;
        if eval_due(o.eval_every, done, o.steps) {
            let v = valid_loss(&mut model, &valid, o.decode_batch, dev)?;
            rep.log(format!(
                "step {done}: train loss {:.3}, valid loss {v:.3} (ppl {:.1}), lr {lr:.2e}, epoch {epoch}",
                tail_mean(&losses, 50),
                v.exp()
            ));
            val = Some(v);
            if let Some(p) = &o.checkpoint {
                save_state(&model, &opt, p, &cfg_str, done)?;
                bpe.save(&bpe_path(p))?;
            }
        }
        curve.row(done, lv, val, lr, &[format!("{tps:.1}")])?;
    }
    rep.finish();
    if let Some(p) = &o.checkpoint {
        save_state(&model, &opt, p, &cfg_str, o.steps)?;
        bpe.save(&bpe_path(p))?;
        rep.log(format!("checkpoint: {} (+ .opt, .bpe.json)", p.display()));
    }
    curve.finish(&rep)?;
    if !valid.is_empty() {
        last_valid = valid_loss(&mut model, &valid, o.decode_batch, dev)?;
    }

    let t0 = Instant::now();
    let greedy = translate_batch(&mut model, &test_src, Decoding::Greedy, o.decode_batch, dev)?;
    let greedy_s = t0.elapsed().as_secs_f64();
    let (g_score, g_text) = bleu_of(&bpe, &greedy, &test_refs)?;
    let (mut b_score, mut b_text, mut beam_s) = (None, Vec::new(), 0.0);
    if o.beam > 0 {
        let t0 = Instant::now();
        let bc = BeamConfig {
            beam: o.beam,
            len_penalty: o.len_penalty,
            bos: BOS as i64,
            eos: EOS as i64,
        };
        let hyps = translate_batch(&mut model, &test_src, Decoding::Beam(bc), o.decode_batch, dev)?;
        beam_s = t0.elapsed().as_secs_f64();
        let (s, t) = bleu_of(&bpe, &hyps, &test_refs)?;
        b_score = Some(s);
        b_text = t;
    }
    rep.log(format!("greedy: {g_score} ({greedy_s:.1} s)"));
    if let Some(s) = &b_score {
        rep.log(format!("beam {}: {s} ({beam_s:.1} s)", o.beam));
    }
    for i in 0..o.show.min(test_pairs.len()) {
        rep.log(format!(
            "  src:    {}\n  ref:    {}\n  greedy: {}{}",
            test_pairs[i].src,
            test_pairs[i].tgt,
            g_text[i],
            b_text.get(i).map(|t| format!("\n  beam:   {t}")).unwrap_or_default()
        ));
    }
    let trained = o.steps.saturating_sub(start);
    Ok(TranslateResult {
        norm: o.norm.short_name().into(),
        pre_norm: o.pre_norm,
        steps: o.steps,
        steps_this_run: trained,
        params: model.param_count(),
        vocab,
        train_pairs: train.len(),
        test_pairs: test_pairs.len(),
        train_loss: tail_mean(&losses, 50),
        valid_loss: last_valid,
        valid_ppl: last_valid.exp(),
        bleu_greedy: g_score.score,
        bleu_beam: b_score.map_or(f64::NAN, |s| s.score),
        bleu_greedy_detail: g_score.to_string(),
        bleu_beam_detail: b_score.map(|s| s.to_string()).unwrap_or_default(),
        beam: o.beam,
        len_penalty: o.len_penalty,
        tokens_per_s: tokens as f64 / train_s.max(1e-9),
        train_s,
        greedy_s,
        beam_s,
        device: dev.name(),
        seed: o.seed,
        wall_s: t_all.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(norm: NormKind, pre_norm: bool) -> Seq2Seq {
        manual_seed(5);
        let mut o = TranslateOptions::quick();
        o.norm = norm;
        o.pre_norm = pre_norm;
        o.dropout = 0.0;
        let mut cfg = o.model_config(23, 10);
        cfg.max_len = 40;
        let m = Seq2Seq::new(cfg, DType::F32, &unigrad::cpu::cpu()).unwrap();
        // our decoder masks PAD and BOS, the model's own greedy does not: make the random
        // model never prefer them, so both must agree exactly
        let bias = m.head.bias.as_ref().unwrap();
        let mut b = bias.to_vec::<f32>().unwrap();
        b[PAD as usize] = -100.0;
        b[BOS as usize] = -100.0;
        bias.assign(&Tensor::from_vec(b, &[23], &unigrad::cpu::cpu()).unwrap())
            .unwrap();
        m
    }

    #[test]
    fn greedy_matches_the_models_own_greedy() {
        let dev = unigrad::cpu::cpu();
        for (norm, pre) in [(NormKind::LayerNorm, false), (NormKind::Unified, true)] {
            let mut m = tiny(norm, pre);
            let sources: Vec<Vec<u32>> = vec![vec![5, 6, 7, EOS], vec![9, EOS], vec![4, 4, 8, 12, 3, EOS]];
            let ours = translate_batch(&mut m, &sources, Decoding::Greedy, 2, &dev).unwrap();
            for (src, got) in sources.iter().zip(&ours) {
                let s = ids_tensor(src, &[1, src.len()], &dev).unwrap();
                let max_len = src.len() * 3 / 2 + 5;
                let theirs = m.greedy(&s, None, BOS as i64, EOS as i64, max_len - 1).unwrap();
                let mut want: Vec<u32> = theirs[0].iter().map(|&i| i as u32).collect();
                if want.last() == Some(&EOS) {
                    want.pop();
                }
                assert_eq!(got, &want, "{norm} pre_norm={pre}");
            }
        }
    }

    #[test]
    fn batches_cover_every_example_once_per_epoch() {
        let lens: Vec<usize> = (0..100).map(|i| 1 + i % 17).collect();
        let b0 = epoch_batches(&lens, 8, 3, 0);
        let mut all: Vec<usize> = b0.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(b0, epoch_batches(&lens, 8, 3, 0));
        assert_ne!(b0, epoch_batches(&lens, 8, 3, 1));
    }

    #[test]
    fn collate_pads_and_shifts() {
        let dev = unigrad::cpu::cpu();
        let a = Example {
            src: vec![10, 11, EOS],
            tgt: vec![20, 21],
        };
        let b = Example {
            src: vec![12, EOS],
            tgt: vec![22],
        };
        let x = collate(&[&a, &b], &dev).unwrap();
        assert_eq!(x.src.to_vec::<i64>().unwrap(), vec![10, 11, 2, 12, 2, 0]);
        assert_eq!(x.src_pad.to_vec::<f32>().unwrap(), vec![0., 0., 0., 0., 0., 1.]);
        assert_eq!(x.tgt_in.to_vec::<i64>().unwrap(), vec![1, 20, 21, 1, 22, 0]);
        assert_eq!(x.tgt_out.to_vec::<i64>().unwrap(), vec![20, 21, 2, 22, 2, 0]);
        assert_eq!(x.tgt_pad.to_vec::<f32>().unwrap(), vec![0., 0., 0., 0., 0., 1.]);
        assert_eq!(x.tokens, 5);
    }
}
