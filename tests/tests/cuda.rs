//! The shared suite on the CUDA backend (feature `cuda`; each test skips without a GPU).

#![cfg(feature = "cuda")]

unigrad_tests::backend_suite!(
    cuda,
    guard = unigrad_cuda::try_device(),
    reason = &unigrad_cuda::skip_reason()
);
