// Data movement: strided copies (a layout change without arithmetic) and dtype casts.
#include "common.cuh"

// dst[view 1] = src[view 0] over a shared logical shape; only the element size matters.
template <typename V>
__device__ __forceinline__ void copy_kernel(const Index<2> &ix, const V *__restrict__ src,
                                            V *__restrict__ dst, u64 n) {
    GRID_STRIDE_LOOP(i, n) {
        u64 off[2];
        offsets<2>(ix, i, off);
        dst[off[1]] = src[off[0]];
    }
}
extern "C" __global__ void copy_b4(Index<2> ix, const u32 *src, u32 *dst, u64 n) {
    copy_kernel<u32>(ix, src, dst, n);
}
extern "C" __global__ void copy_b8(Index<2> ix, const u64 *src, u64 *dst, u64 n) {
    copy_kernel<u64>(ix, src, dst, n);
}

// Float -> integer conversions truncate toward zero and saturate, NaN -> 0: the
// semantics of Rust's `as` (PTX cvt.rzi.s64 saturates by definition, and these
// guards make it explicit).
template <typename S, typename D> __device__ __forceinline__ D convert(S x) { return (D)x; }
template <> __device__ __forceinline__ i64 convert<float, i64>(float x) {
    if (x != x) return 0;
    if (x >= 9.223372036854775807e18f) return 0x7fffffffffffffffLL;
    if (x <= -9.223372036854775808e18f) return (i64)(-0x7fffffffffffffffLL - 1);
    return (i64)x;
}
template <> __device__ __forceinline__ i64 convert<double, i64>(double x) {
    if (x != x) return 0;
    if (x >= 9.223372036854775807e18) return 0x7fffffffffffffffLL;
    if (x <= -9.223372036854775808e18) return (i64)(-0x7fffffffffffffffLL - 1);
    return (i64)x;
}

// i64 -> f32 goes through f64, as the CPU backend does (`x as f64 as f32`), so both
// round large integers identically.
template <> __device__ __forceinline__ float convert<i64, float>(i64 x) { return (float)(double)x; }

#define CAST(sname, S, dname, D)                                                               \
    extern "C" __global__ void cast_##sname##_##dname(Index<1> ix, const S *src, D *dst, u64 n) { \
        GRID_STRIDE_LOOP(i, n) { dst[i] = convert<S, D>(src[offset1(ix, i)]); }                  \
    }
CAST(f32, float, f32, float)
CAST(f32, float, f64, double)
CAST(f32, float, i64, i64)
CAST(f64, double, f32, float)
CAST(f64, double, f64, double)
CAST(f64, double, i64, i64)
CAST(i64, i64, f32, float)
CAST(i64, i64, f64, double)
CAST(i64, i64, i64, i64)
