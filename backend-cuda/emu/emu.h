// CUDA shim for the kernel emulator (feature `emulator`): lets g++ compile the CUDA C
// kernels in ../kernels/*.cu unchanged as host code. See emu.cpp for why and how.
//
// Mapping: a block's threads are cooperative fibers on one OS thread, so
// __syncthreads and warp shuffles are real rendezvous points; `__shared__` becomes
// `static` (blocks run one after another, so one copy per kernel instantiation is
// exactly one block's shared memory); atomics are plain read-modify-writes (no two
// fibers ever run at the same time); device pointers are host pointers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

using std::erf;
using std::exp;
using std::fabs;
using std::fma;
using std::fmax;
using std::fmin;
using std::log;
using std::pow;
using std::sqrt;
using std::tanh;

struct emu_dim3 {
    unsigned x, y, z;
};

namespace emu {
emu_dim3 thread_idx();
emu_dim3 block_idx();
emu_dim3 block_dim();
emu_dim3 grid_dim();
void syncthreads();
unsigned long long shfl_xor(unsigned long long bits, int lane_mask);
} // namespace emu

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())

inline void __syncthreads() { emu::syncthreads(); }

template <typename T> inline T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = emu::shfl_xor(bits, lane_mask);
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}

inline float rsqrt(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline double __longlong_as_double(long long i) {
    double d;
    std::memcpy(&d, &i, 8);
    return d;
}

template <typename T> inline T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <typename T> inline T atomicExch(T *p, T v) {
    T old = *p;
    *p = v;
    return old;
}
