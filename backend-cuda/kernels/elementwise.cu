// Elementwise kernels: unary maps, binary maps (broadcasting comes in as stride-0
// dimensions of the Index) and where(cond, a, b).
//
// One kernel per dtype with the op as a run-time argument: the switch is uniform
// across the grid, so it costs a few instructions per element and keeps the PTX
// (and the driver's JIT time) small compared with one kernel per op.
#include "common.cuh"

// Op codes: must match `unary_code` / `binary_code` in src/ops/elementwise.rs.
enum {
    U_NEG = 0, U_EXP, U_LOG, U_SQRT, U_RSQRT, U_ABS, U_RELU, U_TANH, U_SIGMOID,
    U_GELU_ERF, U_GELU_TANH, U_GELU_ERF_GRAD, U_GELU_TANH_GRAD, U_STEP, U_SIGN,
    U_SQR, U_RECIP, U_AFFINE, U_POWF, U_MAX_SCALAR, U_MIN_SCALAR
};
enum {
    B_ADD = 0, B_SUB, B_MUL, B_DIV, B_MAX, B_MIN, B_EQ, B_NE, B_LT, B_LE, B_GT, B_GE
};

template <typename T>
__device__ __forceinline__ T unary_apply(int op, T x, T p0, T p1) {
    const T one = (T)1, half = (T)0.5, zero = (T)0;
    // sqrt(2/pi), 1/sqrt(2), 1/sqrt(2*pi)
    const T k_tanh = (T)0.7978845608028654, k_inv_sqrt2 = (T)0.7071067811865476,
            k_inv_sqrt2pi = (T)0.3989422804014327, k_cubic = (T)0.044715;
    switch (op) {
    case U_NEG: return -x;
    case U_EXP: return exp(x);
    case U_LOG: return log(x);
    case U_SQRT: return sqrt(x);
    case U_RSQRT: return rsqrt(x);
    case U_ABS: return fabs(x);
    case U_RELU: return x <= zero ? zero : x; // NaN -> NaN (PyTorch), like the CPU backend
    case U_TANH: return tanh(x);
    case U_SIGMOID: return one / (one + exp(-x));
    case U_GELU_ERF: return half * x * (one + erf(x * k_inv_sqrt2));
    case U_GELU_TANH: return half * x * (one + tanh(k_tanh * (x + k_cubic * x * x * x)));
    case U_GELU_ERF_GRAD:
        return half * (one + erf(x * k_inv_sqrt2)) + x * k_inv_sqrt2pi * exp(-half * x * x);
    case U_GELU_TANH_GRAD: {
        T t = tanh(k_tanh * (x + k_cubic * x * x * x));
        return half * (one + t) + half * x * (one - t * t) * k_tanh * (one + (T)3 * k_cubic * x * x);
    }
    case U_STEP: return x <= zero ? zero : one; // relu's derivative: NaN -> 1 (PyTorch)
    case U_SIGN: return x > zero ? one : (x < zero ? -one : zero); // NaN -> 0
    case U_SQR: return x * x;
    case U_RECIP: return one / x;
    case U_AFFINE: return x * p0 + p1;
    case U_POWF: // exact for the common integer powers, like the CPU backend
        if (p0 == (T)2) return x * x;
        if (p0 == one) return x;
        if (p0 == zero) return one;
        return pow(x, p0);
    case U_MAX_SCALAR: return nan_max(x, p0);
    case U_MIN_SCALAR: return nan_min(x, p0);
    default: return x;
    }
}

template <typename T>
__device__ __forceinline__ T binary_apply(int op, T a, T b) {
    switch (op) {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    case B_MAX: return nan_max(a, b);
    case B_MIN: return nan_min(a, b);
    case B_EQ: return a == b ? (T)1 : (T)0;
    case B_NE: return a != b ? (T)1 : (T)0;
    case B_LT: return a < b ? (T)1 : (T)0;
    case B_LE: return a <= b ? (T)1 : (T)0;
    case B_GT: return a > b ? (T)1 : (T)0;
    case B_GE: return a >= b ? (T)1 : (T)0;
    default: return a;
    }
}

template <typename T>
__device__ __forceinline__ void unary_kernel(const Index<1> &ix, const T *__restrict__ x,
                                             T *__restrict__ y, u64 n, int op, T p0, T p1) {
    GRID_STRIDE_LOOP(i, n) {
        u64 off[1];
        offsets<1>(ix, i, off);
        y[i] = unary_apply<T>(op, x[off[0]], p0, p1);
    }
}

template <typename T>
__device__ __forceinline__ void binary_kernel(const Index<2> &ix, const T *__restrict__ a,
                                              const T *__restrict__ b, T *__restrict__ y, u64 n,
                                              int op) {
    GRID_STRIDE_LOOP(i, n) {
        u64 off[2];
        offsets<2>(ix, i, off);
        y[i] = binary_apply<T>(op, a[off[0]], b[off[1]]);
    }
}

extern "C" __global__ void unary_f32(Index<1> ix, const float *x, float *y, u64 n, int op,
                                     double p0, double p1) {
    unary_kernel<float>(ix, x, y, n, op, (float)p0, (float)p1);
}
extern "C" __global__ void unary_f64(Index<1> ix, const double *x, double *y, u64 n, int op,
                                     double p0, double p1) {
    unary_kernel<double>(ix, x, y, n, op, p0, p1);
}
extern "C" __global__ void binary_f32(Index<2> ix, const float *a, const float *b, float *y,
                                      u64 n, int op) {
    binary_kernel<float>(ix, a, b, y, n, op);
}
extern "C" __global__ void binary_f64(Index<2> ix, const double *a, const double *b, double *y,
                                      u64 n, int op) {
    binary_kernel<double>(ix, a, b, y, n, op);
}

// Comparisons of i64 operands (i64 1/0); core accepts i64 in comparisons only, so
// the op codes are B_EQ..B_GE and anything else writes 0.
extern "C" __global__ void compare_i64(Index<2> ix, const i64 *a, const i64 *b, i64 *y, u64 n,
                                       int op) {
    GRID_STRIDE_LOOP(i, n) {
        u64 off[2];
        offsets<2>(ix, i, off);
        const i64 x = a[off[0]], z = b[off[1]];
        bool r = false;
        switch (op) {
        case B_EQ: r = x == z; break;
        case B_NE: r = x != z; break;
        case B_LT: r = x < z; break;
        case B_LE: r = x <= z; break;
        case B_GT: r = x > z; break;
        case B_GE: r = x >= z; break;
        default: break;
        }
        y[i] = r ? 1 : 0;
    }
}

// where(cond, a, b): a value select, so it only depends on the element size (4 or 8
// bytes) of a/b and on the dtype of cond. Operands: 0 = cond, 1 = a, 2 = b.
template <typename C, typename V>
__device__ __forceinline__ void where_kernel(const Index<3> &ix, const C *__restrict__ cond,
                                             const V *__restrict__ a, const V *__restrict__ b,
                                             V *__restrict__ y, u64 n) {
    GRID_STRIDE_LOOP(i, n) {
        u64 off[3];
        offsets<3>(ix, i, off);
        y[i] = cond[off[0]] != (C)0 ? a[off[1]] : b[off[2]];
    }
}

#define WHERE(cname, C, vname, V)                                                              \
    extern "C" __global__ void where_##cname##_##vname(Index<3> ix, const C *cond, const V *a,  \
                                                       const V *b, V *y, u64 n) {               \
        where_kernel<C, V>(ix, cond, a, b, y, n);                                               \
    }
WHERE(f32, float, b4, u32)
WHERE(f32, float, b8, u64)
WHERE(f64, double, b4, u32)
WHERE(f64, double, b8, u64)
WHERE(i64, i64, b4, u32)
WHERE(i64, i64, b8, u64)
