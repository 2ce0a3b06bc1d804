//! Losses. Cross-entropy wraps core's fused `log_softmax` + `gather` op (with
//! `ignore_index` and label smoothing as in PyTorch) and accepts logits of any rank.

use unigrad_core::{Error, Result, ResultExt, Tensor};

/// Mean cross-entropy of `logits [.., V]` against class ids `targets [..]` (i64).
/// Targets equal to `ignore_index` are skipped and not counted; `label_smoothing ∈
/// [0, 1]` mixes the one-hot target with the uniform distribution.
///
/// **Differs from PyTorch:** when every target is ignored the loss is 0 with zero
/// gradients, not NaN (see [`Tensor::cross_entropy`]).
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    ignore_index: Option<i64>,
    label_smoothing: f64,
) -> Result<Tensor> {
    if logits.rank() < 1 || logits.shape()[..logits.rank() - 1] != *targets.shape() {
        return Err(Error::ShapeMismatch {
            op: "cross_entropy",
            lhs: logits.shape().to_vec(),
            rhs: targets.shape().to_vec(),
        });
    }
    let v = logits.shape()[logits.rank() - 1];
    let n = targets.numel();
    logits
        .reshape(&[n, v])?
        .cross_entropy(&targets.reshape(&[n])?, ignore_index, label_smoothing)
        .in_op("cross_entropy")
}

/// Nats to bits: divide a cross-entropy in nats by `ln 2`.
pub fn nats_to_bits(nats: f64) -> f64 {
    nats / std::f64::consts::LN_2
}
