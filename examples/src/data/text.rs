//! Byte-level text corpus (Shakespeare) for character/byte language models.
//!
//! A byte-level model needs no tokenizer: every byte is a token, so the vocabulary is
//! [`VOCAB_SIZE`] = 256 and any text can be encoded. This module loads the bundled
//! Shakespeare text, splits it nanoGPT-style (first 90% of the bytes for training, the last
//! 10% for validation, see `data/shakespeare/README.md`), samples reproducible random training
//! batches, walks the validation set in fixed windows, and computes the unigram baseline in
//! bits per byte, the number a trained model must clearly beat.

use std::path::{Path, PathBuf};

use crate::rng::Rng;
use crate::{Error, Result};

/// Vocabulary size of a byte-level model.
pub const VOCAB_SIZE: usize = 256;

/// Fraction of the corpus used for training by [`ByteCorpus::shakespeare`].
pub const DEFAULT_TRAIN_FRACTION: f64 = 0.9;

/// Path of the Shakespeare text inside a data folder such as [`crate::data_dir`].
pub fn shakespeare_path(data_dir: &Path) -> PathBuf {
    data_dir.join("shakespeare").join("shakespeare.txt")
}

/// Reads the bundled Shakespeare text (`<data_dir>/shakespeare/shakespeare.txt`) as bytes.
pub fn load_shakespeare(data_dir: &Path) -> Result<Vec<u8>> {
    let path = shakespeare_path(data_dir);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    if bytes.is_empty() {
        return Err(Error::format(path.display().to_string(), "file is empty"));
    }
    Ok(bytes)
}

/// A byte corpus split into a training part and a validation part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteCorpus {
    /// The training bytes (a prefix of the corpus).
    pub train: Vec<u8>,
    /// The validation bytes (the rest of the corpus).
    pub val: Vec<u8>,
}

impl ByteCorpus {
    /// Splits `bytes` into the first `floor(len * train_fraction)` bytes for training and the
    /// rest for validation. Both parts must be non-empty.
    pub fn from_bytes(bytes: &[u8], train_fraction: f64) -> Result<Self> {
        if !(train_fraction > 0.0 && train_fraction < 1.0) {
            return Err(Error::invalid(format!(
                "train_fraction must be in (0, 1), got {train_fraction}"
            )));
        }
        let cut = (bytes.len() as f64 * train_fraction).floor() as usize;
        if cut == 0 || cut >= bytes.len() {
            return Err(Error::invalid(format!(
                "corpus of {} bytes is too small to split with train_fraction {train_fraction}",
                bytes.len()
            )));
        }
        Ok(ByteCorpus {
            train: bytes[..cut].to_vec(),
            val: bytes[cut..].to_vec(),
        })
    }

    /// Loads Shakespeare from `data_dir` and splits it 90% / 10%.
    pub fn shakespeare(data_dir: &Path) -> Result<Self> {
        Self::from_bytes(&load_shakespeare(data_dir)?, DEFAULT_TRAIN_FRACTION)
    }

    /// The unigram baseline on the validation part, in bits per byte (see [`unigram_bpb`]).
    pub fn unigram_bpb(&self) -> f64 {
        unigram_bpb(&self.train, &self.val)
    }
}

/// Cross-entropy in bits per byte of `eval` under a unigram (order-0) byte model estimated on
/// `train` with add-one (Laplace) smoothing over all 256 byte values:
/// `p(b) = (count_train(b) + 1) / (len(train) + 256)`, result `-mean(log2 p(b))` over `eval`.
///
/// This is the loss of a model that ignores context, so a language model that has learned
/// anything must beat it. Returns 0 for an empty `eval`.
pub fn unigram_bpb(train: &[u8], eval: &[u8]) -> f64 {
    if eval.is_empty() {
        return 0.0;
    }
    let mut counts = [0u64; VOCAB_SIZE];
    for &b in train {
        counts[b as usize] += 1;
    }
    let denom = (train.len() + VOCAB_SIZE) as f64;
    let mut eval_counts = [0u64; VOCAB_SIZE];
    for &b in eval {
        eval_counts[b as usize] += 1;
    }
    let total: f64 = eval_counts
        .iter()
        .zip(counts.iter())
        .filter(|(&n, _)| n > 0)
        .map(|(&n, &c)| -(n as f64) * ((c as f64 + 1.0) / denom).log2())
        .sum();
    total / eval.len() as f64
}

/// One batch of next-token prediction examples, flattened row-major as `[batch, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Input tokens; `inputs[b * seq_len + t]` is position `t` of row `b`.
    pub inputs: Vec<u32>,
    /// Targets: the input sequence shifted left by one (`targets[i]` follows `inputs[i]`).
    pub targets: Vec<u32>,
    /// Number of rows.
    pub batch_size: usize,
    /// Number of positions per row.
    pub seq_len: usize,
}

fn check_window(data_len: usize, batch_size: usize, seq_len: usize) -> Result<()> {
    if batch_size == 0 || seq_len == 0 {
        return Err(Error::invalid(format!(
            "batch_size and seq_len must be positive (got {batch_size} and {seq_len})"
        )));
    }
    if data_len < seq_len + 1 {
        return Err(Error::invalid(format!(
            "data of {data_len} bytes is too short for seq_len {seq_len} (needs seq_len + 1)"
        )));
    }
    Ok(())
}

fn push_window(data: &[u8], start: usize, seq_len: usize, batch: &mut Batch) {
    let w = &data[start..start + seq_len + 1];
    batch.inputs.extend(w[..seq_len].iter().map(|&b| b as u32));
    batch.targets.extend(w[1..].iter().map(|&b| b as u32));
}

/// Samples random training windows from a byte sequence, reproducibly from a seed.
///
/// Each row starts at a uniformly random offset in `0..=len - seq_len - 1`; its targets are the
/// following `seq_len` bytes. The same seed always yields the same sequence of batches.
#[derive(Debug, Clone)]
pub struct BatchSampler<'a> {
    data: &'a [u8],
    batch_size: usize,
    seq_len: usize,
    rng: Rng,
}

impl<'a> BatchSampler<'a> {
    /// Creates a sampler over `data`. Fails if a window of `seq_len + 1` bytes does not fit
    /// or if `batch_size` or `seq_len` is zero.
    pub fn new(data: &'a [u8], batch_size: usize, seq_len: usize, seed: u64) -> Result<Self> {
        check_window(data.len(), batch_size, seq_len)?;
        Ok(BatchSampler {
            data,
            batch_size,
            seq_len,
            rng: Rng::new(seed),
        })
    }

    /// Draws the next batch.
    pub fn sample(&mut self) -> Batch {
        let mut batch = Batch {
            inputs: Vec::with_capacity(self.batch_size * self.seq_len),
            targets: Vec::with_capacity(self.batch_size * self.seq_len),
            batch_size: self.batch_size,
            seq_len: self.seq_len,
        };
        let starts = self.data.len() - self.seq_len; // number of valid start offsets
        for _ in 0..self.batch_size {
            let start = self.rng.index(starts);
            push_window(self.data, start, self.seq_len, &mut batch);
        }
        batch
    }

    /// Draws the next batch as `(inputs, targets)`.
    pub fn sample_pair(&mut self) -> (Vec<u32>, Vec<u32>) {
        let b = self.sample();
        (b.inputs, b.targets)
    }
}

/// Cuts `data` into consecutive, non-overlapping windows for evaluation and groups them into
/// batches (the last batch may have fewer rows). Deterministic: no randomness is involved.
///
/// Window `k` covers inputs `data[k*seq_len .. (k+1)*seq_len]` and targets one byte later.
/// At most `max_windows` windows are produced (`None` for all of them), so a quick validation
/// pass can look at a fixed prefix of the validation set.
pub fn eval_batches(data: &[u8], batch_size: usize, seq_len: usize, max_windows: Option<usize>) -> Result<Vec<Batch>> {
    check_window(data.len(), batch_size, seq_len)?;
    let mut n_windows = (data.len() - 1) / seq_len;
    if let Some(m) = max_windows {
        n_windows = n_windows.min(m);
    }
    let mut batches = Vec::new();
    let mut k = 0;
    while k < n_windows {
        let rows = batch_size.min(n_windows - k);
        let mut batch = Batch {
            inputs: Vec::with_capacity(rows * seq_len),
            targets: Vec::with_capacity(rows * seq_len),
            batch_size: rows,
            seq_len,
        };
        for r in 0..rows {
            push_window(data, (k + r) * seq_len, seq_len, &mut batch);
        }
        batches.push(batch);
        k += rows;
    }
    Ok(batches)
}

/// Turns model output tokens back into text. Byte sequences that are not valid UTF-8, and
/// tokens above 255 (which are not bytes), become U+FFFD (the replacement character).
pub fn decode_bytes(tokens: &[u32]) -> String {
    // 0xFF never occurs in UTF-8, so it is a safe stand-in for an out-of-range token.
    let bytes: Vec<u8> = tokens.iter().map(|&t| u8::try_from(t).unwrap_or(0xFF)).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Encodes text as byte tokens.
pub fn encode_bytes(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_prefix_and_suffix() {
        let bytes: Vec<u8> = (0..100u8).collect();
        let c = ByteCorpus::from_bytes(&bytes, 0.9).unwrap();
        assert_eq!(c.train, (0..90u8).collect::<Vec<_>>());
        assert_eq!(c.val, (90..100u8).collect::<Vec<_>>());
        assert!(ByteCorpus::from_bytes(&bytes, 1.0).is_err());
        assert!(ByteCorpus::from_bytes(&bytes, f64::NAN).is_err());
        assert!(ByteCorpus::from_bytes(&[1], 0.5).is_err());
    }

    #[test]
    fn shakespeare_loads_with_documented_split() {
        let c = ByteCorpus::shakespeare(&crate::data_dir()).unwrap();
        assert_eq!(c.train.len() + c.val.len(), 1_132_220);
        assert_eq!(c.train.len(), 1_018_998); // as documented in the data README
        let bpb = c.unigram_bpb();
        // English text under an order-0 byte model: roughly 4.3-4.8 bits per byte.
        assert!((4.0..5.0).contains(&bpb), "unigram bpb {bpb}");
    }

    #[test]
    fn unigram_bpb_by_hand() {
        // train = "aab": counts a=2, b=1; denominator 3 + 256 = 259.
        // eval = "ab": -(log2(3/259) + log2(2/259)) / 2.
        let expect = -((3.0f64 / 259.0).log2() + (2.0f64 / 259.0).log2()) / 2.0;
        assert!((unigram_bpb(b"aab", b"ab") - expect).abs() < 1e-12);
        // With no training data every byte has probability 1/256: exactly 8 bits.
        assert!((unigram_bpb(b"", b"xyz") - 8.0).abs() < 1e-12);
        assert_eq!(unigram_bpb(b"abc", b""), 0.0);
    }

    #[test]
    fn sampler_is_seeded_and_shifted() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut s1 = BatchSampler::new(&data, 4, 8, 123).unwrap();
        let mut s2 = BatchSampler::new(&data, 4, 8, 123).unwrap();
        let mut s3 = BatchSampler::new(&data, 4, 8, 124).unwrap();
        let b1 = s1.sample();
        assert_eq!(b1, s2.sample());
        assert_ne!(b1, s3.sample());
        assert_eq!(b1.inputs.len(), 32);
        assert_eq!(b1.targets.len(), 32);
        for row in 0..4 {
            let inp = &b1.inputs[row * 8..row * 8 + 8];
            let tgt = &b1.targets[row * 8..row * 8 + 8];
            assert_eq!(&inp[1..], &tgt[..7]);
            assert_eq!(tgt[7], (inp[7] + 1) % 256);
        }
        // Windows that exactly fit: the only valid offset is 0.
        let tiny = [5u8, 6, 7];
        let (i, t) = BatchSampler::new(&tiny, 2, 2, 0).unwrap().sample_pair();
        assert_eq!(i, vec![5, 6, 5, 6]);
        assert_eq!(t, vec![6, 7, 6, 7]);
        assert!(BatchSampler::new(&tiny, 1, 3, 0).is_err());
        assert!(BatchSampler::new(&tiny, 0, 1, 0).is_err());
    }

    #[test]
    fn eval_batches_cover_data_in_order() {
        let data: Vec<u8> = (0..23u8).collect();
        // (23 - 1) / 5 = 4 windows, batches of 3 -> rows 3 + 1.
        let b = eval_batches(&data, 3, 5, None).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].batch_size, 3);
        assert_eq!(b[1].batch_size, 1);
        assert_eq!(b[0].inputs[..5], [0, 1, 2, 3, 4]);
        assert_eq!(b[1].inputs, vec![15, 16, 17, 18, 19]);
        assert_eq!(b[1].targets, vec![16, 17, 18, 19, 20]);
        let limited = eval_batches(&data, 3, 5, Some(2)).unwrap();
        assert_eq!(limited.len(), 1);
        assert_eq!(limited[0].batch_size, 2);
    }

    #[test]
    fn byte_codec_round_trip() {
        let s = "To be, or not to be";
        assert_eq!(decode_bytes(&encode_bytes(s)), s);
        assert_eq!(decode_bytes(&[104, 105, 300]), "hi\u{FFFD}");
    }
}
