// The norm family: row statistics (mean / biased variance, `Backend::moments_last`)
// and fused LayerNorm / RMSNorm over the last axis, forward (`Backend::norm_last`) and
// backward (`Backend::norm_last_backward`).
//
// The composed defaults in core take a dozen launches and as many passes over memory;
// here the forward is one launch and the backward two (three with the affine weight's
// gradient), each reading a row a few times from cache. Rows are assigned as described
// in rows.cuh. The arithmetic follows the CPU backend's kernels/norm.rs step by step
// (two-pass variance, `1 / sqrt(var + eps)`, `(x - mu) * r * w + b`), so the backends
// agree to rounding.
//
// The column sums of the backward (dw = sum over rows of dy * xhat, db = sum of dy)
// are deterministic: `norm_bwd_cols` sums fixed chunks of rows per column in order,
// and the host combines the chunk partials with the (deterministic) reduce kernel.
#include "rows.cuh"

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

// y = (x - mu) * r * w + b over dense rows; mu = 0 for RMSNorm (rms_mode), and the
// statistics go to `mean` and `rstd` (one per row). `w`, `b` may be null.
template <typename T>
__device__ __forceinline__ void norm_fwd(const T *__restrict__ x, const T *__restrict__ w,
                                        const T *__restrict__ b, T *__restrict__ y, T *__restrict__ mean,
                                        T *__restrict__ rstd, u64 n_rows, u64 n_cols, double eps_d,
                                        u32 warp_mode, u32 rms_mode) {
    __shared__ T sh[32];
    const RowPlan p = row_plan(warp_mode);
    const T inv_n = (T)1 / (T)(n_cols > 0 ? n_cols : 1);
    const T eps = (T)eps_d;
    for (u64 row = p.row; row < n_rows; row += p.row_step) {
        const T *xr = x + row * n_cols;
        T *yr = y + row * n_cols;
        T mu = (T)0;
        if (!rms_mode) {
            T s = (T)0;
            for (u64 j = p.lane; j < n_cols; j += p.lanes) s += xr[j];
            mu = row_sum<T>(s, warp_mode, sh) * inv_n;
        }
        T q = (T)0;
        for (u64 j = p.lane; j < n_cols; j += p.lanes) {
            const T d = xr[j] - mu;
            q += d * d;
        }
        const T r = (T)1 / sqrt(row_sum<T>(q, warp_mode, sh) * inv_n + eps);
        for (u64 j = p.lane; j < n_cols; j += p.lanes) {
            T v = (xr[j] - mu) * r;
            if (w) v = v * w[j];
            if (b) v = v + b[j];
            yr[j] = v;
        }
        if (p.lane == 0) {
            mean[row] = mu;
            rstd[row] = r;
        }
    }
}

// dx = r * (g - xhat * mean(g * xhat) - mean(g)) with g = dy * w (or dy when w is
// null) and xhat = (x - mu) * r; RMSNorm (rms_mode) drops the mean(g) term.
template <typename T>
__device__ __forceinline__ void norm_bwd(const T *__restrict__ x, const T *__restrict__ dy,
                                        const T *__restrict__ mean, const T *__restrict__ rstd,
                                        const T *__restrict__ w, T *__restrict__ dx, u64 n_rows, u64 n_cols,
                                        u32 warp_mode, u32 rms_mode) {
    __shared__ T sh[32];
    const RowPlan p = row_plan(warp_mode);
    const T inv_n = (T)1 / (T)(n_cols > 0 ? n_cols : 1);
    for (u64 row = p.row; row < n_rows; row += p.row_step) {
        const T *xr = x + row * n_cols, *gr = dy + row * n_cols;
        T *dr = dx + row * n_cols;
        const T mu = mean[row], r = rstd[row];
        T sgx = (T)0, sg = (T)0;
        for (u64 j = p.lane; j < n_cols; j += p.lanes) {
            const T g = w ? gr[j] * w[j] : gr[j];
            sgx += g * ((xr[j] - mu) * r);
            sg += g;
        }
        const T proj = row_sum<T>(sgx, warp_mode, sh) * inv_n;
        const T mg = rms_mode ? (T)0 : row_sum<T>(sg, warp_mode, sh) * inv_n;
        for (u64 j = p.lane; j < n_cols; j += p.lanes) {
            const T g = w ? gr[j] * w[j] : gr[j];
            dr[j] = r * (g - (xr[j] - mu) * r * proj - mg);
        }
    }
}

// Partial column sums of the affine gradients: for chunk c of `chunk_rows` rows and
// column j, pw[c, j] = sum of dy * xhat and pb[c, j] = sum of dy over the chunk's rows,
// added in row order (pb may be null: RMSNorm has no bias).
template <typename T>
__device__ __forceinline__ void norm_bwd_cols(const T *__restrict__ x, const T *__restrict__ dy,
                                             const T *__restrict__ mean, const T *__restrict__ rstd,
                                             T *__restrict__ pw, T *__restrict__ pb, u64 n_rows, u64 n_cols,
                                             u64 chunk_rows, u64 n_chunks) {
    GRID_STRIDE_LOOP(i, n_chunks * n_cols) {
        const u64 c = i / n_cols, j = i % n_cols;
        const u64 end = (c + 1) * chunk_rows < n_rows ? (c + 1) * chunk_rows : n_rows;
        T a = (T)0, s = (T)0;
        for (u64 row = c * chunk_rows; row < end; ++row) {
            const T g = dy[row * n_cols + j];
            a += g * ((x[row * n_cols + j] - mean[row]) * rstd[row]);
            s += g;
        }
        pw[i] = a;
        if (pb) pb[i] = s;
    }
}

#define NORM_KERNELS(T, t)                                                                                  \
    extern "C" __global__ void moments_##t(Index<1> rows, u64 cs, const T *x, T *mean, T *var, u64 n_rows, \
                                           u64 n_cols, u32 warp_mode) {                                   \
        moments<T>(rows, cs, x, mean, var, n_rows, n_cols, warp_mode);                                    \
    }                                                                                                       \
    extern "C" __global__ void norm_fwd_##t(const T *x, const T *w, const T *b, T *y, T *mean, T *rstd,    \
                                            u64 n_rows, u64 n_cols, double eps, u32 warp_mode,            \
                                            u32 rms_mode) {                                               \
        norm_fwd<T>(x, w, b, y, mean, rstd, n_rows, n_cols, eps, warp_mode, rms_mode);                    \
    }                                                                                                       \
    extern "C" __global__ void norm_bwd_##t(const T *x, const T *dy, const T *mean, const T *rstd,         \
                                            const T *w, T *dx, u64 n_rows, u64 n_cols, u32 warp_mode,     \
                                            u32 rms_mode) {                                               \
        norm_bwd<T>(x, dy, mean, rstd, w, dx, n_rows, n_cols, warp_mode, rms_mode);                       \
    }                                                                                                       \
    extern "C" __global__ void norm_bwd_cols_##t(const T *x, const T *dy, const T *mean, const T *rstd,    \
                                                 T *pw, T *pb, u64 n_rows, u64 n_cols, u64 chunk_rows,    \
                                                 u64 n_chunks) {                                          \
        norm_bwd_cols<T>(x, dy, mean, rstd, pw, pb, n_rows, n_cols, chunk_rows, n_chunks);                \
    }
NORM_KERNELS(float, f32)
NORM_KERNELS(double, f64)
