//! `Linear`: `y = x·Wᵀ + b` with PyTorch's weight layout `[out, in]`.
//!
//! The product uses a transposed *view* of the weight (no copy; the GEMM reads the
//! strides). The layer is one custom op rather than a chain of recorded ops so its
//! backward produces the weight gradient directly in `[out, in]` layout (`gᵀ·x`, a
//! dense tensor the optimizer streams through) and skips gradients nobody needs.

use crate::init;
use crate::module::{join, Module, ParamVisitor};
use unigrad_core::custom::{apply, CustomOp};
use unigrad_core::{DType, Device, Error, Result, ResultExt, Tensor};

/// A fully connected layer over the last dimension.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Weight `[out, in]`.
    pub weight: Tensor,
    /// Optional bias `[out]`.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer with PyTorch's default initialisation: weight and bias uniform in
    /// `±1/sqrt(in)` (kaiming-uniform with `a = √5`).
    pub fn new(in_features: usize, out_features: usize, bias: bool, dtype: DType, dev: &Device) -> Result<Linear> {
        let bound = 1.0 / (in_features.max(1) as f64).sqrt();
        let weight = init::uniform(&[out_features, in_features], bound, dtype, dev)?;
        let bias = if bias {
            Some(init::uniform(&[out_features], bound, dtype, dev)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// A layer with weight `N(0, std²)` and zero bias (GPT-style initialisation).
    pub fn new_normal(
        in_features: usize,
        out_features: usize,
        bias: bool,
        std: f64,
        dtype: DType,
        dev: &Device,
    ) -> Result<Linear> {
        let weight = init::normal(&[out_features, in_features], std, dtype, dev)?;
        let bias = if bias {
            Some(init::zeros(&[out_features], dtype, dev)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Wrap existing tensors (made parameters here); checks that the shapes agree.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        if weight.rank() != 2 {
            return Err(Error::invalid(
                "Linear",
                format!("weight must be [out, in], got shape {:?}", weight.shape()),
            ));
        }
        if let Some(b) = &bias {
            if b.shape() != [weight.shape()[0]] {
                return Err(Error::ShapeMismatch {
                    op: "Linear",
                    lhs: weight.shape().to_vec(),
                    rhs: b.shape().to_vec(),
                });
            }
        }
        Ok(Linear {
            weight: crate::module::param(weight),
            bias: bias.map(crate::module::param),
        })
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// `x [.., in] → [.., out]`. Errors (a dtype or device that differs from the
    /// weight's, say) name `Linear`, not the matmul inside.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let inf = self.in_features();
        if x.rank() == 0 || x.shape()[x.rank() - 1] != inf {
            return Err(Error::ShapeMismatch {
                op: "Linear",
                lhs: x.shape().to_vec(),
                rhs: self.weight.shape().to_vec(),
            });
        }
        let op = LinearOp {
            need_x: x.tracks_grad(),
            need_w: self.weight.tracks_grad(),
            has_bias: self.bias.is_some(),
            saved: None,
        };
        match &self.bias {
            Some(b) => apply(op, &[x, &self.weight, b]),
            None => apply(op, &[x, &self.weight]),
        }
        .in_op("Linear")
    }
}

impl Module for Linear {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        f(&join(prefix, "weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(&join(prefix, "bias"), b);
        }
    }
}

struct LinearOp {
    need_x: bool,
    need_w: bool,
    has_bias: bool,
    /// `(x as [rows, in], weight, input shape)`.
    saved: Option<(Tensor, Tensor, Vec<usize>)>,
}

impl CustomOp for LinearOp {
    fn name(&self) -> String {
        "linear".into()
    }

    fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        let _p = crate::profile::scope("linear.fwd", Some(inputs[0].device()));
        let (x, w) = (&inputs[0], &inputs[1]);
        let (out, inf) = (w.shape()[0], w.shape()[1]);
        let rows = x.numel() / inf.max(1);
        let x2 = x.reshape(&[rows, inf])?;
        let mut y = x2.matmul(&w.t()?)?;
        if let Some(b) = inputs.get(2) {
            y = y.add(b)?;
        }
        let mut out_shape = x.shape().to_vec();
        *out_shape.last_mut().expect("rank checked") = out;
        self.saved = Some((x2, w.clone(), x.shape().to_vec()));
        y.reshape(&out_shape)
    }

    fn backward(self: Box<Self>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let _p = crate::profile::scope("linear.bwd", Some(g.device()));
        let (x2, w, in_shape) = self.saved.as_ref().ok_or_else(|| crate::not_run("linear"))?;
        self.grads(x2, w, in_shape, g)
    }

    /// The same formulas on the attached inputs (recorded ops), so gradients of
    /// gradients (`create_graph`) go through `Linear`.
    fn differentiable_backward(&self, inputs: &[Tensor], g: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let rows = x.numel() / w.shape()[1].max(1);
        Some(
            x.reshape(&[rows, w.shape()[1]])
                .and_then(|x2| self.grads(&x2, w, x.shape(), g)),
        )
    }
}

impl LinearOp {
    /// `(dx, dW, db)` from `x` as `[rows, in]`, the weight, `x`'s shape and `g`.
    fn grads(&self, x2: &Tensor, w: &Tensor, in_shape: &[usize], g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let out = w.shape()[0];
        let g2 = g.reshape(&[x2.shape()[0], out])?;
        let gx = if self.need_x {
            Some(g2.matmul(w)?.reshape(in_shape)?)
        } else {
            None
        };
        let gw = if self.need_w { Some(g2.t()?.matmul(x2)?) } else { None };
        let mut grads = vec![gx, gw];
        if self.has_bias {
            grads.push(Some(g2.sum(&[0], false)?));
        }
        Ok(grads)
    }
}
