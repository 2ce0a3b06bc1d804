//! Naive reference implementations on `Vec<f64>`, written for clarity, not speed.
//!
//! Every forward test compares a backend's result with these. They share no code
//! with core or any backend: indices are unravelled one element at a time,
//! broadcasting is spelled out per dimension, matmul is the triple loop, softmax
//! and cross-entropy follow their textbook definitions. A bug would have to be made
//! twice, in two very different styles, to go unnoticed.

use unigrad_core::{Result, Tensor};

/// A dense row-major n-d array of f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Nd {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements in row-major order.
    pub data: Vec<f64>,
}

/// Row-major multi-index of flat index `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        if shape[d] > 0 {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
    }
    idx
}

/// Flat index of a multi-index in `shape`.
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// NumPy broadcast of two shapes, or `None` when incompatible.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let da = if i < r - a.len() { 1 } else { a[i - (r - a.len())] };
        let db = if i < r - b.len() { 1 } else { b[i - (r - b.len())] };
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        });
    }
    Some(out)
}

impl Nd {
    /// An array from its parts; panics when the sizes disagree (test code).
    pub fn new(shape: &[usize], data: Vec<f64>) -> Nd {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "Nd::new: {shape:?}");
        Nd {
            shape: shape.to_vec(),
            data,
        }
    }

    /// The values of a tensor (any dtype, any layout), read through `to_vec_f64`.
    pub fn of(t: &Tensor) -> Result<Nd> {
        Ok(Nd::new(t.shape(), t.to_vec_f64()?))
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Element at a multi-index.
    pub fn at(&self, idx: &[usize]) -> f64 {
        self.data[ravel(idx, &self.shape)]
    }

    /// The element that broadcasts to position `idx` of a larger `out` shape.
    fn at_broadcast(&self, idx: &[usize]) -> f64 {
        // operands of lower rank align with the trailing dims
        let extra = idx.len() - self.shape.len();
        let own: Vec<usize> = self
            .shape
            .iter()
            .enumerate()
            .map(|(d, &s)| if s == 1 { 0 } else { idx[d + extra] })
            .collect();
        self.at(&own)
    }

    /// Elementwise map.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Nd {
        Nd::new(&self.shape, self.data.iter().map(|&x| f(x)).collect())
    }

    /// Broadcasting elementwise combination; `None` when shapes are incompatible.
    pub fn zip(&self, o: &Nd, f: impl Fn(f64, f64) -> f64) -> Option<Nd> {
        let shape = broadcast_shape(&self.shape, &o.shape)?;
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                let idx = unravel(i, &shape);
                f(self.at_broadcast(&idx), o.at_broadcast(&idx))
            })
            .collect();
        Some(Nd::new(&shape, data))
    }

    /// This array broadcast to `shape`.
    pub fn broadcast_to(&self, shape: &[usize]) -> Nd {
        let n: usize = shape.iter().product();
        Nd::new(shape, (0..n).map(|i| self.at_broadcast(&unravel(i, shape))).collect())
    }

    /// Fold over `axes` (non-negative, any order) starting from `init`.
    pub fn reduce(&self, axes: &[usize], keepdim: bool, init: f64, f: impl Fn(f64, f64) -> f64) -> Nd {
        let kept: Vec<usize> = self
            .shape
            .iter()
            .enumerate()
            .map(|(d, &s)| if axes.contains(&d) { 1 } else { s })
            .collect();
        let mut out = vec![init; kept.iter().product()];
        for (i, &x) in self.data.iter().enumerate() {
            let mut idx = unravel(i, &self.shape);
            for &a in axes {
                idx[a] = 0;
            }
            let o = ravel(&idx, &kept);
            out[o] = f(out[o], x);
        }
        let shape: Vec<usize> = if keepdim {
            kept
        } else {
            (0..self.shape.len())
                .filter(|d| !axes.contains(d))
                .map(|d| self.shape[d])
                .collect()
        };
        Nd::new(&shape, out)
    }

    fn count(&self, axes: &[usize]) -> f64 {
        axes.iter().map(|&a| self.shape[a]).product::<usize>() as f64
    }

    /// Sum over axes.
    pub fn sum(&self, axes: &[usize], keepdim: bool) -> Nd {
        self.reduce(axes, keepdim, 0.0, |a, b| a + b)
    }

    /// Mean over axes.
    pub fn mean(&self, axes: &[usize], keepdim: bool) -> Nd {
        let n = self.count(axes);
        self.sum(axes, keepdim).map(|s| s / n)
    }

    /// Maximum over axes.
    pub fn max(&self, axes: &[usize], keepdim: bool) -> Nd {
        self.reduce(axes, keepdim, f64::NEG_INFINITY, f64::max)
    }

    /// Minimum over axes.
    pub fn min(&self, axes: &[usize], keepdim: bool) -> Nd {
        self.reduce(axes, keepdim, f64::INFINITY, f64::min)
    }

    /// Variance over axes (two-pass), dividing by `n − 1` when `unbiased`.
    pub fn var(&self, axes: &[usize], keepdim: bool, unbiased: bool) -> Nd {
        let n = self.count(axes);
        let mu = self.mean(axes, true);
        let sq = self.zip(&mu, |x, m| (x - m) * (x - m)).expect("same rank");
        sq.sum(axes, keepdim).map(|s| s / if unbiased { n - 1.0 } else { n })
    }

    /// Batched matrix product with broadcast batch dims: the triple loop per batch.
    pub fn matmul(&self, o: &Nd) -> Nd {
        let (ra, rb) = (self.shape.len(), o.shape.len());
        let (m, k, n) = (self.shape[ra - 2], self.shape[ra - 1], o.shape[rb - 1]);
        assert_eq!(k, o.shape[rb - 2], "reference matmul: inner dims");
        let batch = broadcast_shape(&self.shape[..ra - 2], &o.shape[..rb - 2]).expect("batch dims broadcast");
        let nb: usize = batch.iter().product();
        let mut out_shape = batch.clone();
        out_shape.extend([m, n]);
        let mut out = Vec::with_capacity(nb * m * n);
        // the batch's two matrices, element by element through broadcasting
        let matrix = |x: &Nd, bidx: &[usize], rows: usize, cols: usize| -> Vec<f64> {
            let mut v = Vec::with_capacity(rows * cols);
            for r in 0..rows {
                for c in 0..cols {
                    let mut idx = bidx.to_vec();
                    idx.extend([r, c]);
                    v.push(x.at_broadcast(&idx));
                }
            }
            v
        };
        for b in 0..nb {
            let bidx = unravel(b, &batch);
            let (ma, mb) = (matrix(self, &bidx, m, k), matrix(o, &bidx, k, n));
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for p in 0..k {
                        s += ma[i * k + p] * mb[p * n + j];
                    }
                    out.push(s);
                }
            }
        }
        Nd::new(&out_shape, out)
    }

    /// Dims reordered: output dim `i` is input dim `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Nd {
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let n = self.numel();
        let data = (0..n)
            .map(|i| {
                let oi = unravel(i, &shape);
                let mut ii = vec![0; perm.len()];
                for (d, &p) in perm.iter().enumerate() {
                    ii[p] = oi[d];
                }
                self.at(&ii)
            })
            .collect();
        Nd::new(&shape, data)
    }

    /// Swap two dims.
    pub fn transpose(&self, a: usize, b: usize) -> Nd {
        let mut perm: Vec<usize> = (0..self.shape.len()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Entries `start..start + len` of `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Nd {
        let mut shape = self.shape.clone();
        shape[dim] = len;
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                let mut idx = unravel(i, &shape);
                idx[dim] += start;
                self.at(&idx)
            })
            .collect();
        Nd::new(&shape, data)
    }

    /// Same data, new shape.
    pub fn reshape(&self, shape: &[usize]) -> Nd {
        Nd::new(shape, self.data.clone())
    }

    /// Concatenation along `dim`.
    pub fn cat(parts: &[&Nd], dim: usize) -> Nd {
        let mut shape = parts[0].shape.clone();
        shape[dim] = parts.iter().map(|p| p.shape[dim]).sum();
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                let mut idx = unravel(i, &shape);
                let mut k = 0;
                while idx[dim] >= parts[k].shape[dim] {
                    idx[dim] -= parts[k].shape[dim];
                    k += 1;
                }
                parts[k].at(&idx)
            })
            .collect();
        Nd::new(&shape, data)
    }

    /// Rows of `dim` picked by `ids`.
    pub fn index_select(&self, dim: usize, ids: &[i64]) -> Nd {
        let mut shape = self.shape.clone();
        shape[dim] = ids.len();
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                let mut idx = unravel(i, &shape);
                idx[dim] = ids[idx[dim]] as usize;
                self.at(&idx)
            })
            .collect();
        Nd::new(&shape, data)
    }

    /// `out[i] = self[i with dim replaced by ids[i]]`, `ids` of shape `ids_shape`.
    pub fn gather(&self, dim: usize, ids: &[i64], ids_shape: &[usize]) -> Nd {
        let data = (0..ids.len())
            .map(|i| {
                let mut idx = unravel(i, ids_shape);
                idx[dim] = ids[i] as usize;
                self.at(&idx)
            })
            .collect();
        Nd::new(ids_shape, data)
    }

    /// `self` plus `src` added at `self[i with dim replaced by ids[i]]`.
    pub fn scatter_add(&self, dim: usize, ids: &[i64], src: &Nd) -> Nd {
        let mut out = self.clone();
        for (i, &v) in src.data.iter().enumerate() {
            let mut idx = unravel(i, &src.shape);
            idx[dim] = ids[i] as usize;
            let o = ravel(&idx, &self.shape);
            out.data[o] += v;
        }
        out
    }

    /// Softmax along `dim`: `exp(x − max) / Σ exp(x − max)`.
    pub fn softmax(&self, dim: usize) -> Nd {
        let m = self.max(&[dim], true);
        let e = self.zip(&m, |x, m| (x - m).exp()).expect("keepdim broadcasts");
        let s = e.sum(&[dim], true);
        e.zip(&s, |a, b| a / b).expect("keepdim broadcasts")
    }

    /// Log-softmax along `dim`: `x − max − ln Σ exp(x − max)`.
    pub fn log_softmax(&self, dim: usize) -> Nd {
        let m = self.max(&[dim], true);
        let sh = self.zip(&m, |x, m| x - m).expect("keepdim broadcasts");
        let lse = sh.map(f64::exp).sum(&[dim], true).map(f64::ln);
        sh.zip(&lse, |a, b| a - b).expect("keepdim broadcasts")
    }

    /// Mean cross-entropy of logits `[N, C]` against `targets`, PyTorch semantics:
    /// rows whose target is `ignore` are skipped and not counted; with smoothing
    /// `ε` the per-row loss is `(1 − ε)·(−log p_t) + ε·mean_c(−log p_c)`. With no
    /// counted row the loss is 0 (unigrad's documented choice).
    pub fn cross_entropy(&self, targets: &[i64], ignore: Option<i64>, eps: f64) -> f64 {
        let (n, c) = (self.shape[0], self.shape[1]);
        let mut total = 0.0;
        let mut count = 0.0;
        for (i, &t) in targets.iter().enumerate().take(n) {
            if Some(t) == ignore {
                continue;
            }
            let row = &self.data[i * c..(i + 1) * c];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|&x| (x - m).exp()).sum::<f64>().ln();
            let nll = lse - row[t as usize];
            let smooth = row.iter().map(|&x| lse - x).sum::<f64>() / c as f64;
            total += (1.0 - eps) * nll + eps * smooth;
            count += 1.0;
        }
        if count == 0.0 {
            0.0
        } else {
            total / count
        }
    }
}

/// Scalar reference functions.
pub mod scalar {
    /// erf by its Maclaurin series (|x| ≤ 3) or the Laplace continued fraction for
    /// erfc (|x| > 3), both to ~1e-15.
    pub fn erf(x: f64) -> f64 {
        let ax = x.abs();
        let r = if ax <= 3.0 {
            // erf(x) = 2/√π Σ (−1)ⁿ x^{2n+1} / (n! (2n+1))
            let mut term = ax; // (−1)ⁿ x^{2n+1} / n!
            let mut s = ax;
            let mut n = 0.0;
            loop {
                n += 1.0;
                term *= -ax * ax / n;
                let t = term / (2.0 * n + 1.0);
                s += t;
                if t.abs() < 1e-18 {
                    break;
                }
            }
            s * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(x) = e^{−x²}/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))), evaluated bottom-up
            let mut f = ax;
            for k in (1..60).rev() {
                f = ax + (k as f64 / 2.0) / f;
            }
            1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / f
        };
        r.copysign(x)
    }

    /// Standard normal CDF.
    pub fn phi(x: f64) -> f64 {
        0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
    }

    /// GELU, exact: `x·Φ(x)`.
    pub fn gelu(x: f64) -> f64 {
        x * phi(x)
    }

    /// GELU, tanh approximation: `x/2·(1 + tanh(√(2/π)(x + 0.044715x³)))`.
    pub fn gelu_tanh(x: f64) -> f64 {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
    }

    /// Logistic sigmoid.
    pub fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }
}
