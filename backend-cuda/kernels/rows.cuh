// Row helpers shared by the last-axis row kernels (softmax.cu, norm.cu).
//
// A row is handled by one warp when it has at most the host's `WARP_ROW_MAX_COLS`
// columns (typical attention and LayerNorm rows), else by a whole block. `warp_mode`
// is uniform over the grid, so the block-wide barriers in block mode are never
// divergent.
#pragma once
#include "common.cuh"

template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return -__int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double neg_inf<double>() {
    return -__longlong_as_double(0x7ff0000000000000LL);
}

// Sum / max over the threads working on one row; every thread gets the result.
template <typename T> __device__ __forceinline__ T row_sum(T v, bool warp_mode, T *sh) {
    v = warp_sum(v);
    if (warp_mode) return v;
    const int w = threadIdx.x / 32, l = threadIdx.x % 32, nw = blockDim.x / 32;
    __syncthreads(); // the previous use of sh is finished
    if (l == 0) sh[w] = v;
    __syncthreads();
    return warp_sum(l < nw ? sh[l] : (T)0);
}
template <typename T> __device__ __forceinline__ T row_max(T v, bool warp_mode, T *sh) {
    v = warp_max(v);
    if (warp_mode) return v;
    const int w = threadIdx.x / 32, l = threadIdx.x % 32, nw = blockDim.x / 32;
    __syncthreads();
    if (l == 0) sh[w] = v;
    __syncthreads();
    return warp_max(l < nw ? sh[l] : neg_inf<T>());
}

// Row assignment: returns this thread's first row, lane and step, plus the row stride.
struct RowPlan {
    u64 row, row_step;
    u32 lane, lanes;
};
__device__ __forceinline__ RowPlan row_plan(bool warp_mode) {
    RowPlan p;
    if (warp_mode) {
        const u32 per_block = blockDim.x / 32;
        p.row = (u64)blockIdx.x * per_block + threadIdx.x / 32;
        p.row_step = (u64)gridDim.x * per_block;
        p.lane = threadIdx.x % 32;
        p.lanes = 32;
    } else {
        p.row = blockIdx.x;
        p.row_step = gridDim.x;
        p.lane = threadIdx.x;
        p.lanes = blockDim.x;
    }
    return p;
}
