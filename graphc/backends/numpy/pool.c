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

/* one offset of a 2x2 window: the winner moves on a strictly greater value or a NaN */
#define STEP22(v, off) { const int hit = ((v) > best) | ((v) != (v)); best = hit ? (v) : best; at = hit ? (off) : at; }

/* 2x2 windows at stride 2 (LeNet's, VGG's): all four reads of an output in one pass along its row pair, the
 * index widened from unsigned (SSE2 has no signed 32->64 widening), about twice the offset passes' speed */
#define POOL22(NAME, T)                                                                                   \
static void NAME(const T *x, T *out, long long *idx, long p0, long p1, long H, long W, long Ho, long Wo) \
{                                                                                                        \
    for (long p = p0; p < p1; p++) {                                                                     \
        for (long i = 0; i < Ho; i++) {                                                                  \
            const T *r0 = x + p * H * W + 2 * i * W, *r1 = r0 + W;                                       \
            T *o = out + (p * Ho + i) * Wo;                                                              \
            long long *ix = idx + (p * Ho + i) * Wo;                                                     \
            const unsigned corner = (unsigned)(2 * i * W), w = (unsigned)W;                              \
            for (long j = 0; j < Wo; j++) {                                                              \
                T best = r0[2 * j];                                                                      \
                unsigned at = 0;                                                                         \
                STEP22(r0[2 * j + 1], 1u) STEP22(r1[2 * j], w) STEP22(r1[2 * j + 1], w + 1u)           \
                o[j] = best;                                                                             \
                ix[j] = (long long)(corner + 2u * (unsigned)j + at);                                     \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
}

#define POOL(NAME, T)                                                                                     \
POOL22(NAME##_22, T)                                                                                     \
void NAME(const T *x, T *out, long long *idx, long p0, long p1, long H, long W, long Ho, long Wo,       \
          long kh, long kw, long sh, long sw)                                                            \
{                                                                                                        \
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && H * W < (1L << 31)) {                                \
        NAME##_22(x, out, idx, p0, p1, H, W, Ho, Wo);                                                    \
        return;                                                                                          \
    }                                                                                                    \
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
