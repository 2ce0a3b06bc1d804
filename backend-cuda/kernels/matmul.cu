// Batched GEMM: C[b] = A[b] · B[b] with A [M, K], B [K, N] given by arbitrary strides
// (so transposed operands are read in place) and per-batch offsets from an Index<2>
// over the batch dimensions (stride 0 broadcasts one matrix over the batch).
// C is dense [batch, M, N].
//
// Classic shared-memory tiling: a block of 256 threads computes a BM x BN tile of C,
// each thread a TM x TN micro-tile whose rows/columns are spaced BM/TM and BN/TN apart
// (so shared-memory reads are conflict-free broadcasts and the final stores are
// coalesced). K is walked in steps of BK; the next A/B tiles are fetched into
// registers while the current ones are multiplied (software pipelining).
//
// Coalescing with arbitrary strides: if A's k-stride is 1 (row-major A), consecutive
// threads load consecutive k; otherwise consecutive threads load consecutive m, which
// is the contiguous direction of a transposed A. Likewise for B along n or k. The
// choice is a uniform branch on the strides, so one kernel serves every layout.
#include "common.cuh"

#define GEMM_THREADS 256

template <typename T, typename IT, int BM, int BN, int BK, int TM, int TN>
__device__ __forceinline__ void gemm_kernel(const Index<2> &batch, u64 n_batch,
                                            const T *__restrict__ A, const T *__restrict__ B,
                                            T *__restrict__ C, IT M, IT N, IT K, IT a_sm,
                                            IT a_sk, IT b_sk, IT b_sn) {
    constexpr int TX = BN / TN;                     // threads along n
    constexpr int TY = BM / TM;                     // threads along m
    static_assert(TX * TY == GEMM_THREADS, "256 threads per block");
    constexpr int LA = BM * BK / GEMM_THREADS;      // A elements each thread loads per tile
    constexpr int LB = BK * BN / GEMM_THREADS;      // B elements each thread loads per tile
    static_assert(GEMM_THREADS % BK == 0 && GEMM_THREADS % BM == 0 && GEMM_THREADS % BN == 0, "tile shape");

    __shared__ T As[BK][BM + 1];
    __shared__ T Bs[BK][BN];

    const int tid = threadIdx.x;
    const int tx = tid % TX, ty = tid / TX;
    const IT m0 = (IT)blockIdx.y * BM, n0 = (IT)blockIdx.x * BN;

    // This thread's load pattern: element p of the tile is at (mm0 + p*dm, kk0 + p*dk)
    // for A and (kk0 + p*dk, nn0 + p*dn) for B, all relative to the tile origin.
    const bool a_kc = a_sk == 1 && a_sm != 1;
    const int a_mm0 = a_kc ? tid / BK : tid % BM, a_kk0 = a_kc ? tid % BK : tid / BM;
    const int a_dm = a_kc ? GEMM_THREADS / BK : 0, a_dk = a_kc ? 0 : GEMM_THREADS / BM;
    const bool b_nc = b_sn == 1 || b_sk != 1;
    const int b_nn0 = b_nc ? tid % BN : tid / BK, b_kk0 = b_nc ? tid / BN : tid % BK;
    const int b_dn = b_nc ? 0 : GEMM_THREADS / BK, b_dk = b_nc ? GEMM_THREADS / BN : 0;

    for (u64 bz = blockIdx.z; bz < n_batch; bz += gridDim.z) {
        u64 off[2];
        offsets<2>(batch, bz, off);
        const T *a_base = A + off[0];
        const T *b_base = B + off[1];
        T *c_base = C + bz * (u64)M * (u64)N;

        // Per-thread origins and per-element steps, so a tile load is one add per element.
        const T *pa = a_base + (m0 + a_mm0) * a_sm + a_kk0 * a_sk;
        const T *pb = b_base + b_kk0 * b_sk + (n0 + b_nn0) * b_sn;
        const IT a_step = a_dm * a_sm + a_dk * a_sk, b_step = b_dk * b_sk + b_dn * b_sn;
        u32 a_ok = 0, b_ok = 0; // bit p: element p's row of A / column of B is inside C
#pragma unroll
        for (int p = 0; p < LA; ++p) a_ok |= (u32)(m0 + a_mm0 + p * a_dm < M) << p;
#pragma unroll
        for (int p = 0; p < LB; ++p) b_ok |= (u32)(n0 + b_nn0 + p * b_dn < N) << p;

        T ra[LA], rb[LB];
        auto load = [&](IT k0) {
#pragma unroll
            for (int p = 0; p < LA; ++p) {
                const IT k = k0 + a_kk0 + p * a_dk;
                ra[p] = ((a_ok >> p) & 1u) && k < K ? pa[k0 * a_sk + p * a_step] : (T)0;
            }
#pragma unroll
            for (int p = 0; p < LB; ++p) {
                const IT k = k0 + b_kk0 + p * b_dk;
                rb[p] = ((b_ok >> p) & 1u) && k < K ? pb[k0 * b_sk + p * b_step] : (T)0;
            }
        };
        auto store = [&]() {
#pragma unroll
            for (int p = 0; p < LA; ++p) As[a_kk0 + p * a_dk][a_mm0 + p * a_dm] = ra[p];
#pragma unroll
            for (int p = 0; p < LB; ++p) Bs[b_kk0 + p * b_dk][b_nn0 + p * b_dn] = rb[p];
        };

        T acc[TM][TN];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) acc[i][j] = (T)0;

        load(0);
        store();
        __syncthreads();
        for (IT k0 = 0; k0 < K; k0 += BK) {
            const bool more = k0 + BK < K;
            if (more) load(k0 + BK);
#pragma unroll
            for (int kk = 0; kk < BK; ++kk) {
                T a[TM], b[TN];
#pragma unroll
                for (int i = 0; i < TM; ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
                for (int j = 0; j < TN; ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
                for (int i = 0; i < TM; ++i)
#pragma unroll
                    for (int j = 0; j < TN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
            }
            __syncthreads();
            if (more) {
                store();
                __syncthreads();
            }
        }

#pragma unroll
        for (int i = 0; i < TM; ++i) {
            const IT m = m0 + ty + i * TY;
            if (m >= M) continue;
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                const IT n = n0 + tx + j * TX;
                if (n < N) c_base[m * N + n] = acc[i][j];
            }
        }
        __syncthreads(); // the tiles are reused by the next batch iteration
    }
}

// All matrix-internal offsets are IT: u32 when every index and offset inside one
// matrix fits in 32 bits (the host checks; that is every realistic case and saves
// registers and 64-bit multiplies), u64 otherwise. Batch offsets are always u64.
#define GEMM(name, T, IT, BM, BN, BK, TM, TN, MIN_BLOCKS)                                     \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS, MIN_BLOCKS)                   \
        name(Index<2> batch, u64 n_batch, const T *A, const T *B, T *C, IT M, IT N, IT K,    \
             IT a_sm, IT a_sk, IT b_sk, IT b_sn) {                                           \
        gemm_kernel<T, IT, BM, BN, BK, TM, TN>(batch, n_batch, A, B, C, M, N, K, a_sm, a_sk, \
                                               b_sk, b_sn);                                  \
    }

// Large tiles for big products, small tiles when the large ones would leave SMs idle,
// and 64-bit-index variants for matrices with more than 2^32 addressable elements.
GEMM(matmul_f32_t128, float, u32, 128, 128, 16, 8, 8, 1)
GEMM(matmul_f32_t64, float, u32, 64, 64, 16, 4, 4, 2)
GEMM(matmul_f64_t64, double, u32, 64, 64, 16, 4, 4, 2)
GEMM(matmul_f32_big, float, u64, 64, 64, 16, 4, 4, 2)
GEMM(matmul_f64_big, double, u64, 64, 64, 16, 4, 4, 2)
