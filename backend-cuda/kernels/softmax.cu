// Fused row kernels over the last axis: softmax / log-softmax forward and backward,
// and the mean / biased variance that LayerNorm needs.
//
// Composing these from primitives costs 4-6 launches and as many full passes over
// memory; here one launch reads each row a few times from cache. A row is handled by
// one warp when it has at most `warp_cols` columns (the host picks; typical attention
// and LayerNorm rows), else by a whole block. `warp_mode` is uniform over the grid,
// so the block-wide barriers in block mode are never divergent.
//
// Forward inputs are strided: `rows` indexes the leading dimensions and `cs` is the
// stride of the last one. Backward inputs and all outputs are dense [n_rows, n_cols].
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
            const T ls = m + log(s);
            for (u64 j = p.lane; j < n_cols; j += p.lanes) yr[j] = xr[j * cs] - ls;
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

// Two passes (mean, then the mean of squared deviations): as accurate as the
// composed version, without its cancellation-prone E[x^2] - E[x]^2 shortcut.
template <typename T>
__device__ __forceinline__ void moments(const Index<1> &rows, u64 cs, const T *__restrict__ x,
                                       T *__restrict__ mean, T *__restrict__ var, u64 n_rows,
                                       u64 n_cols, u32 warp_mode) {
    __shared__ T sh[32];
    const RowPlan p = row_plan(warp_mode);
    const T inv_n = (T)1 / (T)(n_cols > 0 ? n_cols : 1);
    for (u64 row = p.row; row < n_rows; row += p.row_step) {
        const T *xr = x + offset1(rows, row);
        T s = (T)0;
        for (u64 j = p.lane; j < n_cols; j += p.lanes) s += xr[j * cs];
        const T mu = row_sum<T>(s, warp_mode, sh) * inv_n;
        T q = (T)0;
        for (u64 j = p.lane; j < n_cols; j += p.lanes) {
            const T d = xr[j * cs] - mu;
            q += d * d;
        }
        q = row_sum<T>(q, warp_mode, sh) * inv_n;
        if (p.lane == 0) {
            mean[row] = mu;
            var[row] = q;
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
extern "C" __global__ void moments_f32(Index<1> rows, u64 cs, const float *x, float *mean,
                                       float *var, u64 n_rows, u64 n_cols, u32 warp_mode) {
    moments<float>(rows, cs, x, mean, var, n_rows, n_cols, warp_mode);
}
extern "C" __global__ void moments_f64(Index<1> rows, u64 cs, const double *x, double *mean,
                                       double *var, u64 n_rows, u64 n_cols, u32 warp_mode) {
    moments<double>(rows, cs, x, mean, var, n_rows, n_cols, warp_mode);
}
