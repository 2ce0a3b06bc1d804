// Shared definitions for unigrad's CUDA kernels.
//
// Every kernel reads its operands through an `Index<N>`: one logical shape (up to
// MAX_DIMS dimensions, already merged on the host where strides allow) and one
// stride vector + start offset per operand. The host-side twin is `StridedIndex`
// in src/plan.rs; the two layouts must stay byte-identical (all 64-bit fields
// first, then two 32-bit fields, no padding).
#pragma once

#define MAX_DIMS 8

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;

template <int N>
struct Index {
    u64 shape[MAX_DIMS];
    u64 strides[N][MAX_DIMS];
    u64 offset[N];
    u32 rank;
    u32 small; // 1 when every logical index fits in 32 bits (cheaper division)
};

// Storage offsets of logical element `i` (row-major over `shape`) for every operand.
// Dimension 0 needs no division: what is left of `i` after the inner dimensions is
// its coordinate. So a dense operand (rank 1 after merging) costs no division at all.
template <int N>
__device__ __forceinline__ void offsets(const Index<N> &ix, u64 i, u64 (&off)[N]) {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = ix.offset[k];
    if (ix.small) {
        u32 r = (u32)i;
        for (int d = (int)ix.rank - 1; d > 0; --d) {
            u32 n = (u32)ix.shape[d];
            u32 c = r % n;
            r /= n;
#pragma unroll
            for (int k = 0; k < N; ++k) off[k] += (u64)c * ix.strides[k][d];
        }
        if (ix.rank > 0) {
#pragma unroll
            for (int k = 0; k < N; ++k) off[k] += (u64)r * ix.strides[k][0];
        }
    } else {
        u64 r = i;
        for (int d = (int)ix.rank - 1; d > 0; --d) {
            u64 n = ix.shape[d];
            u64 c = r % n;
            r /= n;
#pragma unroll
            for (int k = 0; k < N; ++k) off[k] += c * ix.strides[k][d];
        }
        if (ix.rank > 0) {
#pragma unroll
            for (int k = 0; k < N; ++k) off[k] += r * ix.strides[k][0];
        }
    }
}

// Single-operand convenience form.
__device__ __forceinline__ u64 offset1(const Index<1> &ix, u64 i) {
    u64 off[1];
    offsets<1>(ix, i, off);
    return off[0];
}

// Grid-stride loop over [0, n): kernels are launched with a capped grid.
#define GRID_STRIDE_LOOP(i, n)                                                     \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);            \
         i += (u64)blockDim.x * gridDim.x)

// Reductions used by reduce.cu and the row kernels (rows.cuh, softmax.cu, norm.cu).
enum { RED_SUM = 0, RED_MAX = 1, RED_MIN = 2 };

template <typename T> __device__ __forceinline__ T red_identity(int op);
template <> __device__ __forceinline__ float red_identity<float>(int op) {
    return op == RED_SUM ? 0.0f : (op == RED_MAX ? -__int_as_float(0x7f800000) : __int_as_float(0x7f800000));
}
template <> __device__ __forceinline__ double red_identity<double>(int op) {
    return op == RED_SUM ? 0.0 : (op == RED_MAX ? -__longlong_as_double(0x7ff0000000000000LL)
                                                : __longlong_as_double(0x7ff0000000000000LL));
}

// Max/min that propagate a NaN from either side (the CPU backend's semantics: a NaN
// anywhere in a reduction makes the result NaN, as in NumPy and PyTorch).
template <typename T> __device__ __forceinline__ T nan_max(T a, T b) { return (a != a || a > b) ? a : b; }
template <typename T> __device__ __forceinline__ T nan_min(T a, T b) { return (a != a || a < b) ? a : b; }

template <typename T> __device__ __forceinline__ T red_combine(int op, T a, T b) {
    if (op == RED_SUM) return a + b;
    if (op == RED_MAX) return nan_max(a, b);
    return nan_min(a, b);
}

template <typename T> __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
    return v;
}

template <typename T> __device__ __forceinline__ T warp_max(T v) {
#pragma unroll
    for (int s = 16; s > 0; s >>= 1) v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, s));
    return v;
}
