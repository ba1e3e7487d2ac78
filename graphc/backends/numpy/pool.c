/* Max pooling with torch's indices, for windows without padding (graphc/backends/numpy/pool.py runs it once
 * native.py has built it, and its numpy kernel otherwise, which gives the same results).
 *
 * Planes are the (C, N) pairs of a CNHW array, each H*W contiguous. For one output row, every kernel offset
 * (a, b) in row-major order takes one pass along the row (vectorised by the compiler), keeping each window's
 * running maximum and its winner's offset a*W + b: the winner moves on a strictly greater value, or on
 * any NaN, as in torch's CPU kernel. Offset 0 starts each window, so an all -inf window keeps it. */
#include <math.h>

/* one kernel offset along one output row, for a stride known to the compiler (1, 2) or not */
#define OFFSET_PASS(T, SW)                                                                                  \
    for (long j = 0; j < Wo; j++) {                                                                      \
        const T v = r[j * (SW)];                                                                         \
        const int hit = (v > best[j]) | (v != v);                                                        \
        best[j] = hit ? v : best[j];                                                                     \
        at[j] = hit ? off : at[j];                                                                       \
    }

#define POOL(NAME, T)                                                                                     \
void NAME(const T *x, T *out, long long *idx, long p0, long p1, long H, long W, long Ho, long Wo,       \
          long kh, long kw, long sh, long sw)                                                            \
{                                                                                                        \
    T best[Wo];                                                                                          \
    int at[Wo]; /* the winner's offset a*W + b from its window's corner */                               \
    for (long p = p0; p < p1; p++) {                                                                     \
        const T *xp = x + p * H * W;                                                                     \
        for (long i = 0; i < Ho; i++) {                                                                  \
            const T *r0 = xp + i * sh * W;                                                               \
            for (long j = 0; j < Wo; j++) { best[j] = r0[j * sw]; at[j] = 0; }                           \
            for (long a = 0; a < kh; a++) {                                                              \
                for (long b = a == 0; b < kw; b++) {                                                     \
                    const T *r = r0 + a * W + b;                                                         \
                    const int off = (int)(a * W + b);                                                    \
                    if (sw == 2) { OFFSET_PASS(T, 2) }                                                      \
                    else if (sw == 1) { OFFSET_PASS(T, 1) }                                                 \
                    else { OFFSET_PASS(T, sw) }                                                             \
                }                                                                                        \
            }                                                                                            \
            T *o = out + (p * Ho + i) * Wo;                                                              \
            long long *ix = idx + (p * Ho + i) * Wo;                                                     \
            const long long corner = i * sh * W;                                                         \
            for (long j = 0; j < Wo; j++) {                                                              \
                o[j] = best[j];                                                                          \
                ix[j] = corner + j * sw + at[j];                                                         \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
}

POOL(graphc_max_pool_f32, float)
POOL(graphc_max_pool_f64, double)
