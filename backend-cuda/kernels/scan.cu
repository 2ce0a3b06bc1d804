// The scan family: inclusive prefix (or suffix) sums along one axis.
//
// One thread per line: `lines` (an Index<1> over the input's shape without the axis)
// gives each line's start, `axis_stride` steps along it; the dense output is
// [outer, n, inner] with line l = o * inner + i. Sums run in order from the line's
// start (or end), as the CPU backend adds them. i64 wraps on overflow.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void cumsum_kernel(const Index<1> &lines, u64 axis_stride,
                                              const T *__restrict__ x, T *__restrict__ y,
                                              u64 n_lines, u64 n, u64 inner, int reverse) {
    GRID_STRIDE_LOOP(l, n_lines) {
        const u64 base = offset1(lines, l);
        T *out = y + (l / inner) * n * inner + l % inner;
        T acc = (T)0;
        for (u64 k = 0; k < n; ++k) {
            const u64 j = reverse ? n - 1 - k : k;
            acc = acc + x[base + j * axis_stride];
            out[j * inner] = acc;
        }
    }
}

// i64 adds as unsigned so that overflow wraps (signed overflow is undefined in C++).
template <>
__device__ __forceinline__ void cumsum_kernel<i64>(const Index<1> &lines, u64 axis_stride,
                                                   const i64 *__restrict__ x, i64 *__restrict__ y,
                                                   u64 n_lines, u64 n, u64 inner, int reverse) {
    GRID_STRIDE_LOOP(l, n_lines) {
        const u64 base = offset1(lines, l);
        i64 *out = y + (l / inner) * n * inner + l % inner;
        u64 acc = 0;
        for (u64 k = 0; k < n; ++k) {
            const u64 j = reverse ? n - 1 - k : k;
            acc += (u64)x[base + j * axis_stride];
            out[j * inner] = (i64)acc;
        }
    }
}

#define SCAN_KERNEL(name, T)                                                                    \
    extern "C" __global__ void cumsum_##name(Index<1> lines, u64 axis_stride, const T *x, T *y, \
                                             u64 n_lines, u64 n, u64 inner, int reverse) {      \
        cumsum_kernel<T>(lines, axis_stride, x, y, n_lines, n, inner, reverse);                 \
    }
SCAN_KERNEL(f32, float)
SCAN_KERNEL(f64, double)
SCAN_KERNEL(i64, i64)
