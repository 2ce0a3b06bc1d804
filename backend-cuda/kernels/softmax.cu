// Fused row kernels over the last axis: softmax / log-softmax forward and backward.
//
// Composing these from primitives costs 4-6 launches and as many full passes over
// memory; here one launch reads each row a few times from cache. Rows are assigned
// as described in rows.cuh (a warp or a whole block per row).
//
// Forward inputs are strided: `rows` indexes the leading dimensions and `cs` is the
// stride of the last one. Backward inputs and all outputs are dense [n_rows, n_cols].
#include "rows.cuh"

template <typename T>
__device__ __forceinline__ void softmax_fwd(const Index<1> &rows, u64 cs, const T *__restrict__ x,
                                           T *__restrict__ y, u64 n_rows, u64 n_cols, u32 warp_mode,
                                           u32 log_mode) {
    __shared__ T sh[32];
    const RowPlan p = row_plan(warp_mode);
    for (u64 row = p.row; row < n_rows; row += p.row_step) {
        const T *xr = x + offset1(rows, row);
        T *yr = y + row * n_cols;
        T m = neg_inf<T>();
        for (u64 j = p.lane; j < n_cols; j += p.lanes) m = nan_max(m, xr[j * cs]);
        m = row_max<T>(m, warp_mode, sh);
        if (m == neg_inf<T>()) m = (T)0; // an all -inf row: no inf - inf
        T s = (T)0;
        for (u64 j = p.lane; j < n_cols; j += p.lanes) s += exp(xr[j * cs] - m);
        s = row_sum<T>(s, warp_mode, sh);
        if (log_mode) {
            // (x - m) - log(s), not x - (m + log(s)): the latter rounds to the precision
            // of m, which swamps small log-probabilities when |m| is large
            const T ls = log(s);
            for (u64 j = p.lane; j < n_cols; j += p.lanes) yr[j] = (xr[j * cs] - m) - ls;
        } else {
            const T inv = (T)1 / s;
            for (u64 j = p.lane; j < n_cols; j += p.lanes) yr[j] = exp(xr[j * cs] - m) * inv;
        }
    }
}

// softmax:     dx = y * (dy - sum(dy * y))
// log-softmax: dx = dy - exp(y) * sum(dy)
template <typename T>
__device__ __forceinline__ void softmax_bwd(const T *__restrict__ y, const T *__restrict__ dy,
                                           T *__restrict__ dx, u64 n_rows, u64 n_cols,
                                           u32 warp_mode, u32 log_mode) {
    __shared__ T sh[32];
    const RowPlan p = row_plan(warp_mode);
    for (u64 row = p.row; row < n_rows; row += p.row_step) {
        const T *yr = y + row * n_cols, *gr = dy + row * n_cols;
        T *dr = dx + row * n_cols;
        T s = (T)0;
        if (log_mode) {
            for (u64 j = p.lane; j < n_cols; j += p.lanes) s += gr[j];
        } else {
            for (u64 j = p.lane; j < n_cols; j += p.lanes) s += gr[j] * yr[j];
        }
        s = row_sum<T>(s, warp_mode, sh);
        if (log_mode) {
            for (u64 j = p.lane; j < n_cols; j += p.lanes) dr[j] = gr[j] - exp(yr[j]) * s;
        } else {
            for (u64 j = p.lane; j < n_cols; j += p.lanes) dr[j] = yr[j] * (gr[j] - s);
        }
    }
}

extern "C" __global__ void softmax_fwd_f32(Index<1> rows, u64 cs, const float *x, float *y,
                                           u64 n_rows, u64 n_cols, u32 warp_mode, u32 log_mode) {
    softmax_fwd<float>(rows, cs, x, y, n_rows, n_cols, warp_mode, log_mode);
}
extern "C" __global__ void softmax_fwd_f64(Index<1> rows, u64 cs, const double *x, double *y,
                                           u64 n_rows, u64 n_cols, u32 warp_mode, u32 log_mode) {
    softmax_fwd<double>(rows, cs, x, y, n_rows, n_cols, warp_mode, log_mode);
}
extern "C" __global__ void softmax_bwd_f32(const float *y, const float *dy, float *dx, u64 n_rows,
                                           u64 n_cols, u32 warp_mode, u32 log_mode) {
    softmax_bwd<float>(y, dy, dx, n_rows, n_cols, warp_mode, log_mode);
}
extern "C" __global__ void softmax_bwd_f64(const double *y, const double *dy, double *dx,
                                           u64 n_rows, u64 n_cols, u32 warp_mode, u32 log_mode) {
    softmax_bwd<double>(y, dy, dx, n_rows, n_cols, warp_mode, log_mode);
}
