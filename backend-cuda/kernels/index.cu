// Indexing kernels: index_select / gather (reads) and index_add / scatter_add (their
// adjoints, accumulating with atomicAdd because several ids may hit one element).
//
// Out-of-range ids must be an error, never a stray memory access. Every kernel
// bounds-checks each id it uses: a bad id is skipped and recorded in `flag`
// (flag[0] = 1, flag[1] = the id), which the host reads back and turns into
// Error::IndexOutOfRange. The accumulating kernels are preceded by `check_ids`, so an
// error leaves their destination untouched.
#include "common.cuh"

// Like offsets<N>, but operands whose bit is set in `skip` do not advance along
// dimension `dim` (the indexed one); `cdim` receives the coordinate along `dim`.
template <int N>
__device__ __forceinline__ void offsets_skip(const Index<N> &ix, u64 i, u32 skip, u32 dim,
                                             u64 (&off)[N], u64 &cdim) {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = ix.offset[k];
    cdim = 0;
    u64 r = i;
    for (int d = (int)ix.rank - 1; d >= 0; --d) {
        const u64 n = ix.shape[d];
        const u64 c = d > 0 ? r % n : r;
        r = d > 0 ? r / n : 0;
        if ((u32)d == dim) cdim = c;
#pragma unroll
        for (int k = 0; k < N; ++k)
            if (!((u32)d == dim && ((skip >> k) & 1u))) off[k] += c * ix.strides[k][d];
    }
}

__device__ __forceinline__ bool id_ok(i64 id, u64 size, u64 *flag) {
    if (id >= 0 && (u64)id < size) return true;
    atomicExch(flag + 1, (u64)id);
    atomicExch(flag, 1ull);
    return false;
}

extern "C" __global__ void check_ids(Index<1> ids, const i64 *idp, u64 n, u64 size, u64 *flag) {
    GRID_STRIDE_LOOP(i, n) { id_ok(idp[offset1(ids, i)], size, flag); }
}

// out (dense, shape of ix) = src with dimension `dim` picked by ids.
// ix operand 0: src strides over the OUTPUT shape; ids: the flattened ids (Index<1>).
template <typename V>
__device__ __forceinline__ void index_select_kernel(const Index<1> &ix, u32 dim, const Index<1> &ids,
                                                    const i64 *__restrict__ idp,
                                                    const V *__restrict__ src, V *__restrict__ out,
                                                    u64 n, u64 size, u64 *flag) {
    GRID_STRIDE_LOOP(i, n) {
        u64 off[1], c;
        offsets_skip<1>(ix, i, 1u, dim, off, c);
        const i64 id = idp[offset1(ids, c)];
        out[i] = id_ok(id, size, flag) ? src[off[0] + (u64)id * ix.strides[0][dim]] : (V)0;
    }
}

// out (dense, shape of ix) = src[.. ids[i..] ..]; operands: 0 = src, 1 = ids.
template <typename V>
__device__ __forceinline__ void gather_kernel(const Index<2> &ix, u32 dim, const i64 *__restrict__ idp,
                                              const V *__restrict__ src, V *__restrict__ out, u64 n,
                                              u64 size, u64 *flag) {
    GRID_STRIDE_LOOP(i, n) {
        u64 off[2], c;
        offsets_skip<2>(ix, i, 1u, dim, off, c);
        const i64 id = idp[off[1]];
        out[i] = id_ok(id, size, flag) ? src[off[0] + (u64)id * ix.strides[0][dim]] : (V)0;
    }
}

// dst[.. ids[c] ..] += src[.. c ..] over the src shape; operands: 0 = src, 1 = dst (dense).
template <typename T>
__device__ __forceinline__ void index_add_kernel(const Index<2> &ix, u32 dim, const Index<1> &ids,
                                                 const i64 *__restrict__ idp, const T *__restrict__ src,
                                                 T *dst, u64 n, u64 size, u64 *flag) {
    GRID_STRIDE_LOOP(i, n) {
        u64 off[2], c;
        offsets_skip<2>(ix, i, 2u, dim, off, c);
        const i64 id = idp[offset1(ids, c)];
        if (id_ok(id, size, flag)) atomicAdd(dst + off[1] + (u64)id * ix.strides[1][dim], src[off[0]]);
    }
}

// dst[.. ids[i..] ..] += src[i..]; operands: 0 = src, 1 = ids, 2 = dst (dense).
template <typename T>
__device__ __forceinline__ void scatter_add_kernel(const Index<3> &ix, u32 dim, const i64 *__restrict__ idp,
                                                   const T *__restrict__ src, T *dst, u64 n, u64 size,
                                                   u64 *flag) {
    GRID_STRIDE_LOOP(i, n) {
        u64 off[3], c;
        offsets_skip<3>(ix, i, 4u, dim, off, c);
        const i64 id = idp[off[1]];
        if (id_ok(id, size, flag)) atomicAdd(dst + off[2] + (u64)id * ix.strides[2][dim], src[off[0]]);
    }
}

#define SELECT(vname, V)                                                                        \
    extern "C" __global__ void index_select_##vname(Index<1> ix, u32 dim, Index<1> ids,          \
                                                    const i64 *idp, const V *src, V *out, u64 n, \
                                                    u64 size, u64 *flag) {                       \
        index_select_kernel<V>(ix, dim, ids, idp, src, out, n, size, flag);                      \
    }                                                                                            \
    extern "C" __global__ void gather_##vname(Index<2> ix, u32 dim, const i64 *idp, const V *src, \
                                              V *out, u64 n, u64 size, u64 *flag) {              \
        gather_kernel<V>(ix, dim, idp, src, out, n, size, flag);                                 \
    }
SELECT(b4, u32)
SELECT(b8, u64)

#define ACCUM(tname, T)                                                                         \
    extern "C" __global__ void index_add_##tname(Index<2> ix, u32 dim, Index<1> ids,             \
                                                 const i64 *idp, const T *src, T *dst, u64 n,    \
                                                 u64 size, u64 *flag) {                          \
        index_add_kernel<T>(ix, dim, ids, idp, src, dst, n, size, flag);                         \
    }                                                                                            \
    extern "C" __global__ void scatter_add_##tname(Index<3> ix, u32 dim, const i64 *idp,         \
                                                   const T *src, T *dst, u64 n, u64 size,        \
                                                   u64 *flag) {                                  \
        scatter_add_kernel<T>(ix, dim, idp, src, dst, n, size, flag);                            \
    }
ACCUM(f32, float)
ACCUM(f64, double)
