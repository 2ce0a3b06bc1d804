// Kernel emulator: runs the CUDA C kernels of ../kernels on the CPU, for testing the
// whole CUDA backend (host planning + kernels) on machines without a GPU.
//
// Built only with the `emulator` feature (build.rs compiles this file with the host
// C++ compiler and links it). `UNIGRAD_CUDA_EMULATOR=1` then makes `cuda(0)` an
// emulated device whose memory is host memory and whose launches come here.
//
// Each block runs as blockDim cooperative fibers (ucontext) on the calling thread:
// a fiber runs until it finishes, reaches __syncthreads (waits for every unfinished
// thread of the block) or a warp shuffle (waits for every unfinished lane of its
// warp). A barrier nobody can complete is reported as a deadlock instead of hanging,
// which also catches divergent __syncthreads; threads run in a pseudo-random order
// between barriers, so a missing barrier shows up as wrong data. Float results differ from a GPU in
// the last bits (no fused multiply-add contraction, different libm), never in logic.
#include "emu.h"

#include <cstdio>
#include <type_traits>
#include <ucontext.h>
#include <utility>
#include <vector>

#include "../kernels/elementwise.cu"
#include "../kernels/index.cu"
#include "../kernels/matmul.cu"
#include "../kernels/norm.cu"
#include "../kernels/optim.cu"
#include "../kernels/reduce.cu"
#include "../kernels/softmax.cu"
#include "../kernels/view.cu"
#include "../kernels/sort.cu"
#include "../kernels/scan.cu"

namespace emu {
namespace {

enum State { RUNNABLE, AT_SYNCTHREADS, AT_WARP, DONE };

struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    unsigned tid = 0;
    State state = DONE;
};

constexpr size_t STACK_BYTES = 256 * 1024;

ucontext_t g_scheduler;
ucontext_t g_template; // captured once: getcontext is a system call
bool g_have_template = false;
bool g_direct = false; // running a barrier-free kernel as plain calls, no fibers
unsigned g_direct_tid = 0;
const char *g_kernel = "";
std::vector<Fiber> g_fibers;
std::vector<unsigned long long> g_slots;
int g_current = 0;
emu_dim3 g_block{0, 0, 0}, g_grid{1, 1, 1}, g_bdim{1, 1, 1};
void (*g_body)(void **) = nullptr;
void **g_params = nullptr;
char g_error[512] = "";
unsigned long long g_rng = 0x853c49e6748fea9bULL; // fixed seed: runs are reproducible

void trampoline() {
    g_body(g_params);
    g_fibers[g_current].state = DONE; // returning resumes g_scheduler (uc_link)
}

void wait_at(State s) {
    Fiber &f = g_fibers[g_current];
    f.state = s;
    swapcontext(&f.ctx, &g_scheduler);
}

// Run one block to completion; false (with g_error set) on a deadlock.
bool run_block() {
    const unsigned n = g_bdim.x;
    if (!g_have_template) {
        getcontext(&g_template);
        g_have_template = true;
    }
    for (unsigned t = 0; t < n; ++t) {
        Fiber &f = g_fibers[t];
        f.ctx = g_template;
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = f.stack.size();
        f.ctx.uc_link = &g_scheduler;
        makecontext(&f.ctx, trampoline, 0);
        f.tid = t;
        f.state = RUNNABLE;
    }
    std::vector<unsigned> order(n);
    for (unsigned i = 0; i < n; ++i) order[i] = i;
    for (;;) {
        bool progressed = false;
        // Threads run between barriers in a fresh pseudo-random order each time, so a
        // read of shared memory that lacks a barrier before it sees stale data (as it
        // may on a GPU) instead of happening to follow the write.
        for (unsigned i = n - 1; i > 0; --i) {
            g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
            std::swap(order[i], order[(unsigned)(g_rng >> 33) % (i + 1)]);
        }
        for (unsigned i = 0; i < n; ++i) {
            const unsigned t = order[i];
            if (g_fibers[t].state != RUNNABLE) continue;
            g_current = (int)t;
            swapcontext(&g_scheduler, &g_fibers[t].ctx);
            progressed = true;
        }
        // Warp rendezvous: every unfinished lane of the warp is waiting.
        for (unsigned w = 0; w * 32 < n; ++w) {
            unsigned waiting = 0, live = 0;
            for (unsigned t = w * 32; t < std::min(n, w * 32 + 32); ++t) {
                live += g_fibers[t].state != DONE;
                waiting += g_fibers[t].state == AT_WARP;
            }
            if (waiting > 0 && waiting == live) {
                for (unsigned t = w * 32; t < std::min(n, w * 32 + 32); ++t)
                    if (g_fibers[t].state == AT_WARP) g_fibers[t].state = RUNNABLE;
                progressed = true;
            }
        }
        // Block barrier: every unfinished thread is waiting at __syncthreads.
        unsigned at_sync = 0, live = 0;
        for (unsigned t = 0; t < n; ++t) {
            live += g_fibers[t].state != DONE;
            at_sync += g_fibers[t].state == AT_SYNCTHREADS;
        }
        if (live == 0) return true;
        if (at_sync > 0 && at_sync == live) {
            for (unsigned t = 0; t < n; ++t)
                if (g_fibers[t].state == AT_SYNCTHREADS) g_fibers[t].state = RUNNABLE;
            progressed = true;
        }
        if (!progressed) {
            std::snprintf(g_error, sizeof g_error,
                          "deadlock in block (%u, %u, %u): %u of %u live threads at __syncthreads, the others "
                          "at a warp shuffle",
                          g_block.x, g_block.y, g_block.z, at_sync, live);
            return false;
        }
    }
}

// Call a kernel with its parameters unpacked from the driver-style `void **` array.
template <typename... A, size_t... I>
void invoke(void (*f)(A...), void **p, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>> *>(p[I])...);
}
template <typename... A> void call(void (*f)(A...), void **p) {
    invoke(f, p, std::index_sequence_for<A...>{});
}

struct Entry {
    const char *name;
    void (*run)(void **);
    // Uses __syncthreads or warp shuffles, so its threads must be fibers. The others
    // run thread after thread as plain calls, which is much faster.
    bool cooperative;
};

#define K(name) {#name, [](void **p) { call(name, p); }, false}
#define C(name) {#name, [](void **p) { call(name, p); }, true}
const Entry KERNELS[] = {
    K(copy_b4), K(copy_b8),
    K(cast_f32_f32), K(cast_f32_f64), K(cast_f32_i64), K(cast_f64_f32), K(cast_f64_f64),
    K(cast_f64_i64), K(cast_i64_f32), K(cast_i64_f64), K(cast_i64_i64),
    K(unary_f32), K(unary_f64), K(binary_f32), K(binary_f64),
    K(where_f32_b4), K(where_f32_b8), K(where_f64_b4), K(where_f64_b8), K(where_i64_b4), K(where_i64_b8),
    K(check_ids), K(index_select_b4), K(index_select_b8), K(gather_b4), K(gather_b8),
    K(index_add_f32), K(index_add_f64), K(scatter_add_f32), K(scatter_add_f64),
    C(matmul_f32_t128), C(matmul_f32_t64), C(matmul_f64_t64), C(matmul_f32_big), C(matmul_f64_big),
    C(reduce_f32), C(reduce_f64),
    C(softmax_fwd_f32), C(softmax_fwd_f64), C(softmax_bwd_f32), C(softmax_bwd_f64),
    C(moments_f32), C(moments_f64), C(norm_fwd_f32), C(norm_fwd_f64), C(norm_bwd_f32), C(norm_bwd_f64),
    K(norm_bwd_cols_f32), K(norm_bwd_cols_f64),
    K(adam_f32), K(adam_f64),
    K(compare_i64),
    K(arg_reduce_f32), K(arg_reduce_f64), K(arg_reduce_i64), K(argsort_f32), K(argsort_f64), K(argsort_i64),
    K(cumsum_f32), K(cumsum_f64), K(cumsum_i64),
};
#undef K
#undef C

// A barrier in a kernel listed as barrier-free: the table above is wrong.
[[noreturn]] void not_cooperative(const char *what) {
    std::fprintf(stderr, "unigrad kernel emulator: %s calls %s but is not marked cooperative in emu.cpp\n",
                 g_kernel, what);
    std::abort();
}

} // namespace

emu_dim3 thread_idx() { return {g_direct ? g_direct_tid : g_fibers[g_current].tid, 0, 0}; }
emu_dim3 block_idx() { return g_block; }
emu_dim3 block_dim() { return g_bdim; }
emu_dim3 grid_dim() { return g_grid; }
void syncthreads() {
    if (g_direct) not_cooperative("__syncthreads");
    wait_at(AT_SYNCTHREADS);
}
unsigned long long shfl_xor(unsigned long long bits, int lane_mask) {
    if (g_direct) not_cooperative("a warp shuffle");
    const unsigned t = g_fibers[g_current].tid;
    g_slots[t] = bits;
    wait_at(AT_WARP);
    const unsigned long long r = g_slots[(t & ~31u) | ((t & 31u) ^ (unsigned)lane_mask)];
    wait_at(AT_WARP); // nobody overwrites a slot before every lane has read
    return r;
}

} // namespace emu

// C API for the Rust side. Returns 0 on success; otherwise see emu_last_error().
extern "C" int unigrad_emu_launch(const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                  void **params) {
    using namespace emu;
    const Entry *entry = nullptr;
    for (const Entry &e : KERNELS)
        if (std::strcmp(e.name, name) == 0) entry = &e;
    if (!entry) {
        std::snprintf(g_error, sizeof g_error, "the emulator has no kernel %s", name);
        return 1;
    }
    if (bx == 0 || bx > 1024 || bx % 32 != 0) {
        std::snprintf(g_error, sizeof g_error, "block size %u is not a multiple of 32 in 32..1024", bx);
        return 2;
    }
    if (g_fibers.size() < bx) {
        g_fibers.resize(bx);
        for (Fiber &f : g_fibers)
            if (f.stack.empty()) f.stack.resize(STACK_BYTES);
    }
    g_slots.assign(bx, 0);
    g_grid = {gx, gy, gz};
    g_bdim = {bx, 1, 1};
    g_body = entry->run;
    g_params = params;
    g_kernel = entry->name;
    g_direct = !entry->cooperative;
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {
                g_block = {x, y, z};
                if (g_direct) {
                    for (g_direct_tid = 0; g_direct_tid < bx; ++g_direct_tid) g_body(g_params);
                } else if (!run_block()) {
                    return 3;
                }
            }
    g_direct = false;
    return 0;
}

extern "C" const char *unigrad_emu_last_error() { return emu::g_error; }
