//! Token embeddings and positional encodings.
//!
//! [`Embedding`] is a lookup table `[num, dim]` with PyTorch's `padding_idx`: the padding
//! row starts at zero and never receives a gradient, so it stays whatever it is.
//! Positional information comes from a [`LearnedPositions`] table (one trained row per
//! position, named like a plain `nn.Embedding`) or from the fixed sinusoids of
//! [`SinusoidalPositions`] (Vaswani et al. 2017), which hold no parameters.

use crate::init;
use crate::module::{join, Module, ParamVisitor};
use unigrad_core::{in_op, no_grad, DType, Device, Error, Result, Tensor};

/// A lookup table of `num` vectors of size `dim`.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// The table `[num, dim]`.
    pub weight: Tensor,
    /// Row whose gradient is always zero (PyTorch's `padding_idx`).
    pub padding_idx: Option<usize>,
}

impl Embedding {
    /// A table initialised `N(0, 1)` like PyTorch, with the padding row zeroed.
    pub fn new(num: usize, dim: usize, padding_idx: Option<usize>, dtype: DType, dev: &Device) -> Result<Embedding> {
        Embedding::new_normal(num, dim, padding_idx, 1.0, dtype, dev)
    }

    /// A table initialised `N(0, std²)`, with the padding row zeroed.
    pub fn new_normal(
        num: usize,
        dim: usize,
        padding_idx: Option<usize>,
        std: f64,
        dtype: DType,
        dev: &Device,
    ) -> Result<Embedding> {
        if let Some(p) = padding_idx {
            if p >= num {
                return Err(Error::IndexOutOfRange {
                    op: "Embedding",
                    index: p as i64,
                    size: num,
                    shape: vec![num, dim],
                });
            }
        }
        let weight = init::normal(&[num, dim], std, dtype, dev)?;
        let e = Embedding { weight, padding_idx };
        e.zero_padding_row()?;
        Ok(e)
    }

    /// Set the padding row (if any) to zero.
    pub fn zero_padding_row(&self) -> Result<()> {
        let Some(p) = self.padding_idx else { return Ok(()) };
        no_grad(|| {
            let num = self.weight.shape()[0];
            let mut keep = vec![1.0; num];
            keep[p] = 0.0;
            let keep = Tensor::from_f64s(&keep, &[num, 1], self.weight.dtype(), self.weight.device())?;
            self.weight.assign(&self.weight.mul(&keep)?)
        })
    }

    /// Number of rows.
    pub fn num_embeddings(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Vector size.
    pub fn dim(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Look up `ids` (i64, any shape): the result has shape `ids.shape() + [dim]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        in_op("Embedding", || self.lookup(ids))
    }

    fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let out = self.weight.embedding(ids)?;
        let Some(p) = self.padding_idx else { return Ok(out) };
        // Same values everywhere; where the id is the padding index the output is a
        // detached copy, so no gradient reaches the padding row.
        let host = ids.to_vec::<i64>()?;
        if !host.contains(&(p as i64)) {
            return Ok(out);
        }
        let is_pad: Vec<f64> = host.iter().map(|&i| if i == p as i64 { 1.0 } else { 0.0 }).collect();
        let mut mshape = ids.shape().to_vec();
        mshape.push(1);
        let mask = Tensor::from_f64s(&is_pad, &mshape, out.dtype(), out.device())?;
        mask.where_cond(&out.detach(), &out)
    }
}

impl Module for Embedding {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        f(&join(prefix, "weight"), &self.weight);
    }
}

/// Trained position vectors: row `t` is added at position `t` (GPT-2, BERT, ViT style).
#[derive(Clone, Debug)]
pub struct LearnedPositions {
    /// The table `[max_len, dim]`.
    pub weight: Tensor,
}

impl LearnedPositions {
    /// A table initialised `N(0, std²)`.
    pub fn new(max_len: usize, dim: usize, std: f64, dtype: DType, dev: &Device) -> Result<LearnedPositions> {
        Ok(LearnedPositions {
            weight: init::normal(&[max_len, dim], std, dtype, dev)?,
        })
    }

    /// Rows `start .. start + len` as `[len, dim]` (a view, no gather).
    pub fn forward(&self, start: usize, len: usize) -> Result<Tensor> {
        let max = self.weight.shape()[0];
        match start.checked_add(len) {
            Some(end) if end <= max => in_op("LearnedPositions", || self.weight.narrow(0, start, len)),
            _ => Err(Error::invalid(
                "LearnedPositions",
                format!("positions {start}..{start}+{len} exceed the table's {max} rows"),
            )),
        }
    }
}

impl Module for LearnedPositions {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        f(&join(prefix, "weight"), &self.weight);
    }
}

/// Fixed sinusoidal encodings: `pe[t, 2i] = sin(t / 10000^(2i/d))`,
/// `pe[t, 2i+1] = cos(t / 10000^(2i/d))`. No parameters and no buffers (it is a pure
/// function of the position, so checkpoints need not carry it).
#[derive(Clone, Debug)]
pub struct SinusoidalPositions {
    table: Tensor,
}

impl SinusoidalPositions {
    /// Precompute `max_len` positions of size `dim`.
    pub fn new(max_len: usize, dim: usize, dtype: DType, dev: &Device) -> Result<SinusoidalPositions> {
        Ok(SinusoidalPositions {
            table: Tensor::from_f64s(&sinusoid_table(max_len, dim), &[max_len, dim], dtype, dev)?,
        })
    }

    /// Rows `start .. start + len` as `[len, dim]`.
    pub fn forward(&self, start: usize, len: usize) -> Result<Tensor> {
        let max = self.table.shape()[0];
        match start.checked_add(len) {
            Some(end) if end <= max => in_op("SinusoidalPositions", || self.table.narrow(0, start, len)),
            _ => Err(Error::invalid(
                "SinusoidalPositions",
                format!("positions {start}..{start}+{len} exceed the precomputed {max}"),
            )),
        }
    }
}

/// The sinusoid table as row-major f64 values `[max_len, dim]`.
pub fn sinusoid_table(max_len: usize, dim: usize) -> Vec<f64> {
    let mut v = vec![0.0; max_len * dim];
    for t in 0..max_len {
        for i in 0..dim {
            let pair = (i / 2) as f64;
            let angle = t as f64 / 10000f64.powf(2.0 * pair / dim as f64);
            v[t * dim + i] = if i % 2 == 0 { angle.sin() } else { angle.cos() };
        }
    }
    v
}

/// Which positional encoding a model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionKind {
    /// A trained table ([`LearnedPositions`]).
    Learned,
    /// Fixed sinusoids ([`SinusoidalPositions`]).
    Sinusoidal,
}

/// A positional encoding of either kind.
#[derive(Clone, Debug)]
pub enum Positions {
    /// Trained table.
    Learned(LearnedPositions),
    /// Fixed sinusoids.
    Sinusoidal(SinusoidalPositions),
}

impl Positions {
    /// Build `kind` for `max_len` positions of size `dim` (learned tables `N(0, std²)`).
    pub fn new(kind: PositionKind, max_len: usize, dim: usize, std: f64, dtype: DType, dev: &Device) -> Result<Self> {
        Ok(match kind {
            PositionKind::Learned => Positions::Learned(LearnedPositions::new(max_len, dim, std, dtype, dev)?),
            PositionKind::Sinusoidal => Positions::Sinusoidal(SinusoidalPositions::new(max_len, dim, dtype, dev)?),
        })
    }

    /// Encodings of positions `start .. start + len`, `[len, dim]`.
    pub fn forward(&self, start: usize, len: usize) -> Result<Tensor> {
        match self {
            Positions::Learned(p) => p.forward(start, len),
            Positions::Sinusoidal(p) => p.forward(start, len),
        }
    }

    /// Largest number of positions.
    pub fn max_len(&self) -> usize {
        match self {
            Positions::Learned(p) => p.weight.shape()[0],
            Positions::Sinusoidal(p) => p.table.shape()[0],
        }
    }
}

impl Module for Positions {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        if let Positions::Learned(p) = self {
            p.visit_params(prefix, f);
        }
    }
}
