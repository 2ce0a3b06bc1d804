// The optim family: one fused Adam / AdamW step (`Backend::adam_update`), one read of
// the parameter, gradient and moments and one write of each result per element,
// instead of the composed default's dozen launches.
//
// The arithmetic is core's `AdamStep::folded` form, exactly as the CPU backend's
// kernels/norm.rs `adam` writes it:
//   g  = grad + wd_l2 * p                 (wd_l2 = 0 for AdamW)
//   m' = m + (g - m) * (1 - beta1)        (g * (1 - beta1) on the first step, m absent)
//   v' = v + (g^2 - v) * (1 - beta2)
//   p' = p * decay - m' / (sqrt(v') * a + c)   (p' = p when `step` is 0, i.e. lr = 0)
// The constants arrive as doubles and are rounded to T once, as the CPU does.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void adam(const T *__restrict__ p, const T *__restrict__ g, const T *__restrict__ m,
                                    const T *__restrict__ v, T *__restrict__ np, T *__restrict__ nm,
                                    T *__restrict__ nv, u64 n, double wd_l2_d, double one_m_b1_d,
                                    double one_m_b2_d, double decay_d, double a_d, double c_d, u32 step) {
    const T wd_l2 = (T)wd_l2_d, one_m_b1 = (T)one_m_b1_d, one_m_b2 = (T)one_m_b2_d, decay = (T)decay_d,
            a = (T)a_d, c = (T)c_d;
    GRID_STRIDE_LOOP(i, n) {
        const T pi = p[i];
        const T gi = g[i] + wd_l2 * pi;
        const T mi = m ? m[i] + (gi - m[i]) * one_m_b1 : gi * one_m_b1;
        const T g2 = gi * gi;
        const T vi = v ? v[i] + (g2 - v[i]) * one_m_b2 : g2 * one_m_b2;
        nm[i] = mi;
        nv[i] = vi;
        np[i] = step ? pi * decay - mi / (sqrt(vi) * a + c) : pi;
    }
}

#define ADAM_KERNEL(T, t)                                                                                    \
    extern "C" __global__ void adam_##t(const T *p, const T *g, const T *m, const T *v, T *np, T *nm, T *nv, \
                                        u64 n, double wd_l2, double one_m_b1, double one_m_b2, double decay, \
                                        double a, double c, u32 step) {                                      \
        adam<T>(p, g, m, v, np, nm, nv, n, wd_l2, one_m_b1, one_m_b2, decay, a, c, step);                   \
    }
ADAM_KERNEL(float, f32)
ADAM_KERNEL(double, f64)
