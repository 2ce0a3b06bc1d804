//! PowerNorm (Shen et al., ICML 2020). Work in progress by its owner.
