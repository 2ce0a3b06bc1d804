// Reductions (sum, max, min) over any set of axes of a strided tensor.
//
// The host splits the input's dimensions into the kept ones (`kept`, one per output
// element) and the reduced ones (`red`), merging dimensions inside each group. A block
// of 256 threads is a `to` x `tr` grid: `to` outputs at once, `tr` threads
// cooperating on each output's reduction. `o_fast` says which of the two varies
// fastest across a warp, so that a warp reads consecutive addresses whichever way
// the data lies:
//   * row mode (o_fast = 0): reducing along the contiguous axis, lanes walk the row;
//   * column mode (o_fast = 1): reducing across rows, lanes take adjacent outputs.
// When there are few outputs and long reductions, blockIdx.y splits each reduction
// into `splits` chunks written as partials [splits, n_out]; a second launch (column
// mode) combines them.
#include "common.cuh"

// Threads per block; `to * tr` must equal it (the host's BLOCK).
#define REDUCE_THREADS 256

template <typename T>
__device__ __forceinline__ void reduce_kernel(const Index<1> &kept, const Index<1> &red,
                                              const T *__restrict__ src, T *__restrict__ dst,
                                              u64 n_out, u64 n_red, u64 per_split, u32 to,
                                              u32 tr, u32 o_fast, int op) {
    __shared__ T smem[REDUCE_THREADS];
    const u32 tid = threadIdx.x;
    const u32 oi = o_fast ? tid % to : tid / tr;
    const u32 ri = o_fast ? tid / to : tid % tr;
    const u64 o = (u64)blockIdx.x * to + oi;
    const u64 r0 = (u64)blockIdx.y * per_split;
    u64 r1 = r0 + per_split;
    if (r1 > n_red) r1 = n_red;
    T acc = red_identity<T>(op);
    if (o < n_out) {
        const u64 base = offset1(kept, o);
        for (u64 r = r0 + ri; r < r1; r += tr) acc = red_combine<T>(op, acc, src[base + offset1(red, r)]);
    }
    // Tree reduction over the tr threads of each output (tr is a power of two).
    smem[oi * tr + ri] = acc;
    __syncthreads();
    for (u32 s = tr / 2; s > 0; s >>= 1) {
        if (ri < s) smem[oi * tr + ri] = red_combine<T>(op, smem[oi * tr + ri], smem[oi * tr + ri + s]);
        __syncthreads();
    }
    if (ri == 0 && o < n_out) dst[(u64)blockIdx.y * n_out + o] = smem[oi * tr];
}

extern "C" __global__ void reduce_f32(Index<1> kept, Index<1> red, const float *src, float *dst,
                                      u64 n_out, u64 n_red, u64 per_split, u32 to, u32 tr,
                                      u32 o_fast, int op) {
    reduce_kernel<float>(kept, red, src, dst, n_out, n_red, per_split, to, tr, o_fast, op);
}
extern "C" __global__ void reduce_f64(Index<1> kept, Index<1> red, const double *src, double *dst,
                                      u64 n_out, u64 n_red, u64 per_split, u32 to, u32 tr,
                                      u32 o_fast, int op) {
    reduce_kernel<double>(kept, red, src, dst, n_out, n_red, per_split, to, tr, o_fast, op);
}
