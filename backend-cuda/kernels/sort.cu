// The sort family: argmax / argmin (arg_reduce) and a stable argsort along one axis.
//
// One thread per line: `lines` (an Index<1> over the input's shape without the axis)
// gives each line's start, `axis_stride` steps along it, and the dense i64 output
// is [outer, n, inner] (arg_reduce: [outer, 1, inner]) with line l = o * inner + i.
// Every line kernel (these and scan.cu's) takes the same parameters, so one host
// function launches them all; arg_reduce does not need `inner` (its output is
// indexed by line).
// argsort is an insertion sort (stable, O(n^2) per line): simple, and fast enough
// for the short axes (class scores, top-k candidates) these ops see.
#include "common.cuh"

// Codes: must match `ARG_*` in src/ops/sort.rs.
#define ARG_MAX 1
#define ARG_MIN 2

template <typename T> __device__ __forceinline__ bool is_nan(T v) { return v != v; }

// `a` sorts strictly before `b` ascending, NaN above every number.
template <typename T> __device__ __forceinline__ bool less_nan_last(T a, T b) {
    if (is_nan(a)) return false;
    if (is_nan(b)) return true;
    return a < b;
}

template <typename T>
__device__ __forceinline__ void arg_reduce_kernel(const Index<1> &lines, u64 axis_stride,
                                                  const T *__restrict__ x, i64 *__restrict__ y,
                                                  u64 n_lines, u64 n, int op) {
    GRID_STRIDE_LOOP(l, n_lines) {
        const u64 base = offset1(lines, l);
        u64 best = 0;
        T bv = x[base];
        if (!is_nan(bv)) {
            for (u64 j = 1; j < n; ++j) {
                const T v = x[base + j * axis_stride];
                if (is_nan(v)) {
                    best = j;
                    break;
                }
                if (op == ARG_MAX ? v > bv : v < bv) {
                    best = j;
                    bv = v;
                }
            }
        }
        y[l] = (i64)best;
    }
}

template <typename T>
__device__ __forceinline__ void argsort_kernel(const Index<1> &lines, u64 axis_stride,
                                               const T *__restrict__ x, i64 *__restrict__ y,
                                               u64 n_lines, u64 n, u64 inner, int descending) {
    GRID_STRIDE_LOOP(l, n_lines) {
        const u64 base = offset1(lines, l);
        i64 *out = y + (l / inner) * n * inner + l % inner;
        for (u64 j = 0; j < n; ++j) {
            const i64 key = (i64)j;
            const T kv = x[base + j * axis_stride];
            u64 p = j;
            // shift while the element before sorts strictly after the key (stable)
            while (p > 0) {
                const T pv = x[base + (u64)out[(p - 1) * inner] * axis_stride];
                const bool after = descending ? less_nan_last(pv, kv) : less_nan_last(kv, pv);
                if (!after) break;
                out[p * inner] = out[(p - 1) * inner];
                --p;
            }
            out[p * inner] = key;
        }
    }
}

#define SORT_KERNELS(name, T)                                                                   \
    extern "C" __global__ void arg_reduce_##name(Index<1> lines, u64 axis_stride, const T *x,   \
                                                 i64 *y, u64 n_lines, u64 n, u64 /*inner*/,     \
                                                 int op) {                                      \
        arg_reduce_kernel<T>(lines, axis_stride, x, y, n_lines, n, op);                         \
    }                                                                                           \
    extern "C" __global__ void argsort_##name(Index<1> lines, u64 axis_stride, const T *x,      \
                                              i64 *y, u64 n_lines, u64 n, u64 inner,            \
                                              int descending) {                                 \
        argsort_kernel<T>(lines, axis_stride, x, y, n_lines, n, inner, descending);             \
    }
SORT_KERNELS(f32, float)
SORT_KERNELS(f64, double)
SORT_KERNELS(i64, i64)
