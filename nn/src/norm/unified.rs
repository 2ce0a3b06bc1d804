//! Unified Normalization (UN, Yang et al., ACM MM 2022). Work in progress by its owner.
