//! Vision Transformer (Dosovitskiy et al. 2021).
//!
//! Images `[B, C, H, W]` are cut into `p × p` patches, each flattened in `(c, i, j)`
//! order and projected by `patch_embed.proj` — stored as `[D, C, p, p]` like the
//! PyTorch `Conv2d(C, D, p, stride=p)` it is equivalent to, and used through a
//! `[D, C·p·p]` view. A learned `cls_token` is prepended, `pos_embed` added, the
//! sequence runs through `blocks.{i}` (bidirectional [`EncoderLayer`]s), and the
//! class token's final representation (after `norm`, pre-norm models) feeds `head`.
//! Names follow timm's `VisionTransformer` where structures correspond.

use super::Layers;
use crate::attention::Init;
use crate::dropout::Dropout;
use crate::init;
use crate::linear::Linear;
use crate::module::{join, BufferVisitor, Module, NormVisitor, ParamVisitor};
use crate::norm::{Norm, NormConfig};
use crate::transformer::{EncoderLayer, LayerConfig};
use unigrad_core::{DType, Device, Error, Result, Tensor};

/// Hyperparameters of [`Vit`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VitConfig {
    /// Image height and width (square images).
    pub image_size: usize,
    /// Patch side `p` (must divide `image_size`).
    pub patch: usize,
    /// Input channels.
    pub channels: usize,
    /// Number of classes.
    pub classes: usize,
    /// Model width `D`.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Norm at every norm site.
    pub norm: NormConfig,
    /// Pre-norm blocks with a final norm, or post-norm blocks.
    pub pre_norm: bool,
    /// Dropout.
    pub dropout: f64,
    /// LayerNorm Scaling (pre-norm only).
    pub ln_scaling: bool,
}

impl VitConfig {
    /// Patches per image.
    pub fn num_patches(&self) -> usize {
        let side = self.image_size / self.patch.max(1);
        side * side
    }
}

/// Vision Transformer classifier. See the module docs.
#[derive(Debug)]
pub struct Vit {
    /// Patch projection weight `[D, C, p, p]` (`patch_embed.proj.weight`).
    pub patch_weight: Tensor,
    /// Patch projection bias `[D]`.
    pub patch_bias: Tensor,
    /// Class token `[1, 1, D]`.
    pub cls_token: Tensor,
    /// Learned positions `[1, 1 + patches, D]`.
    pub pos_embed: Tensor,
    /// The blocks.
    pub blocks: Vec<EncoderLayer>,
    /// Final norm (pre-norm models).
    pub norm: Option<Norm>,
    /// Classifier.
    pub head: Linear,
    drop: Dropout,
    cfg: VitConfig,
}

impl Vit {
    /// Build with timm-like initialisation: positions, class token and every Linear
    /// (blocks and head) `N(0, 0.02²)` with zero biases; the patch projection uniform in
    /// `±1/√(C·p·p)` (PyTorch's `Conv2d` weight default) with a zero bias.
    pub fn new(cfg: VitConfig, dtype: DType, dev: &Device) -> Result<Vit> {
        if cfg.patch == 0 || cfg.image_size % cfg.patch != 0 {
            return Err(Error::invalid(
                "Vit",
                format!("patch {} does not divide image size {}", cfg.patch, cfg.image_size),
            ));
        }
        let (d, p, c) = (cfg.d_model, cfg.patch, cfg.channels);
        let layers = Layers {
            template: LayerConfig {
                d_model: d,
                heads: cfg.heads,
                d_ff: cfg.d_ff,
                dropout: cfg.dropout,
                norm: cfg.norm,
                pre_norm: cfg.pre_norm,
                bias: true,
                ln_scale: 1.0,
                init: Init::Normal(0.02),
            },
            ln_scaling: cfg.ln_scaling,
        };
        layers.check("Vit")?;
        let fan_in = c * p * p;
        Ok(Vit {
            patch_weight: init::uniform(&[d, c, p, p], 1.0 / (fan_in as f64).sqrt(), dtype, dev)?,
            patch_bias: init::zeros(&[d], dtype, dev)?,
            cls_token: init::normal(&[1, 1, d], 0.02, dtype, dev)?,
            pos_embed: init::normal(&[1, cfg.num_patches() + 1, d], 0.02, dtype, dev)?,
            blocks: layers.encoders(cfg.layers, dtype, dev)?,
            norm: layers.final_norm(dtype, dev)?,
            head: Linear::new_normal(d, cfg.classes, true, 0.02, dtype, dev)?,
            drop: Dropout::new(cfg.dropout)?,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// `[B, C, H, W]` → `[B, patches, C·p·p]` with each patch flattened in `(c, i, j)` order.
    pub fn patchify(&self, images: &Tensor) -> Result<Tensor> {
        let (s, p, c) = (self.cfg.image_size, self.cfg.patch, self.cfg.channels);
        if images.rank() != 4 || images.shape()[1..] != [c, s, s] {
            return Err(Error::invalid(
                "Vit",
                format!("images must be [B, {c}, {s}, {s}], got shape {:?}", images.shape()),
            ));
        }
        let (b, g) = (images.shape()[0], s / p);
        images
            .reshape(&[b, c, g, p, g, p])?
            .permute(&[0, 2, 4, 1, 3, 5])?
            .reshape(&[b, g * g, c * p * p])
    }

    /// Class logits `[B, classes]` for images `[B, C, H, W]`.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let patches = self.patchify(images)?;
        let (b, d) = (patches.shape()[0], self.cfg.d_model);
        let proj = Linear {
            weight: self.patch_weight.reshape(&[d, patches.shape()[2]])?,
            bias: Some(self.patch_bias.clone()),
        };
        let tokens = proj.forward(&patches)?;
        let cls = self.cls_token.broadcast_as(&[b, 1, d])?;
        let x = Tensor::cat(&[&cls, &tokens], 1)?.add(&self.pos_embed)?;
        let mut x = self.drop.forward(&x)?;
        for blk in &self.blocks {
            x = blk.forward(&x, None, None)?;
        }
        if let Some(n) = &self.norm {
            x = n.forward(&x, None)?;
        }
        self.head.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)
    }
}

impl Module for Vit {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        f(&join(prefix, "cls_token"), &self.cls_token);
        f(&join(prefix, "pos_embed"), &self.pos_embed);
        f(&join(prefix, "patch_embed.proj.weight"), &self.patch_weight);
        f(&join(prefix, "patch_embed.proj.bias"), &self.patch_bias);
        for (i, b) in self.blocks.iter().enumerate() {
            b.visit_params(&join(prefix, &format!("blocks.{i}")), f);
        }
        if let Some(n) = &self.norm {
            n.visit_params(&join(prefix, "norm"), f);
        }
        self.head.visit_params(&join(prefix, "head"), f);
    }

    fn visit_buffers(&self, prefix: &str, f: &mut BufferVisitor<'_>) {
        for (i, b) in self.blocks.iter().enumerate() {
            b.visit_buffers(&join(prefix, &format!("blocks.{i}")), f);
        }
        if let Some(n) = &self.norm {
            n.visit_buffers(&join(prefix, "norm"), f);
        }
    }

    fn visit_norms_mut(&mut self, prefix: &str, f: &mut NormVisitor<'_>) {
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.visit_norms_mut(&join(prefix, &format!("blocks.{i}")), f);
        }
        if let Some(n) = &mut self.norm {
            f(&join(prefix, "norm"), n);
        }
    }

    fn set_train(&mut self, train: bool) {
        self.drop.set_train(train);
        self.blocks.iter_mut().for_each(|b| b.set_train(train));
        if let Some(n) = &mut self.norm {
            n.set_train(train);
        }
    }
}
