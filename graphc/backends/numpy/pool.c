/* Max pooling with torch's indices, for windows without padding (graphc/backends/numpy/pool.py runs it once
 * native.py has built it, and its numpy kernel otherwise, which gives the same results).
 *
 * Planes are the (C, N) pairs of a CNHW array, each H*W contiguous. For one output row, every kernel offset
 * (a, b) in row-major order takes one pass along the row (vectorised by the compiler), keeping each window's
 * running maximum and its winner's offset a*W + b: the winner moves on a strictly greater value, or on
 * any NaN, as in torch's CPU kernel. Offset 0 starts each window, so an all -inf window keeps it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* one kernel offset along one output row, for a stride known to the compiler (1, 2) or not */
#define OFFSET_PASS(T, SW)                                                                                  \
    for (long j = 0; j < Wo; j++) {                                                                      \
        const T v = r[j * (SW)];                                                                         \
        const int hit = (v > best[j]) | (v != v);                                                        \
        best[j] = hit ? v : best[j];                                                                     \
        at[j] = hit ? off : at[j];                                                                       \
    }

/* one offset of a 2x2 window: the winner moves on a strictly greater value or a NaN. Selected with bit masks
 * (U: the unsigned type of T's width), so that the scalar iterations after the vector loop do not branch on
 * random data either (they mispredicted on 3 of LeNet's 15 outputs per row). */
#define STEP22(T, U, v, off)                                                                                    \
    {                                                                                                     \
        const T v_ = (v);                                                                                 \
        const U m = -(U)((v_ > best) | (v_ != v_));                                                       \
        U bb, vb;                                                                                         \
        memcpy(&bb, &best, sizeof bb);                                                                    \
        memcpy(&vb, &v_, sizeof vb);                                                                      \
        bb = (vb & m) | (bb & ~m);                                                                        \
        memcpy(&best, &bb, sizeof bb);                                                                    \
        at = ((unsigned)(off) & (unsigned)m) | (at & ~(unsigned)m);                                       \
    }

/* The outputs of a 2x2 stride-2 row pair, 4 at a time in SSE2 vectors: 8 inputs of each row loaded and split
 * into even and odd columns, the same four steps as STEP22 on whole vectors. With overread (any row pair but
 * the last of the call) the last vector reads up to 6 inputs past the row pair, whose lanes are not stored;
 * otherwise it stops at a multiple of 4 and STEP22's scalar loop does the rest. Returns the outputs done. */
typedef float v4 __attribute__((vector_size(16)));
typedef int v4i __attribute__((vector_size(16)));

static inline v4 load4(const float *p) { v4 v; memcpy(&v, p, sizeof v); return v; }

static long rows22_f32(const float *r0, const float *r1, float *o, long long *ix, unsigned corner, unsigned w,
                       long Wo, int overread)
{
    const v4i evens = {0, 2, 4, 6}, odds = {1, 3, 5, 7};
    const long end = overread ? Wo : Wo / 4 * 4;  /* overread: the last vector may read past the row pair */
    long j = 0;
    for (; j < end; j += 4) {
        const v4 a = load4(r0 + 2 * j), b = load4(r0 + 2 * j + 4), c = load4(r1 + 2 * j), d = load4(r1 + 2 * j + 4);
        const v4 cand[3] = {__builtin_shuffle(a, b, odds), __builtin_shuffle(c, d, evens),
                            __builtin_shuffle(c, d, odds)};
        const v4i offs[3] = {(v4i){1, 1, 1, 1}, (v4i){0, 0, 0, 0} + (int)w, (v4i){1, 1, 1, 1} + (int)w};
        v4 best = __builtin_shuffle(a, b, evens);
        v4i at = {0, 0, 0, 0};
        for (int k = 0; k < 3; k++) {
            const v4 v = cand[k];
            const v4i m = (v > best) | (v != v);
            best = (v4)(((v4i)v & m) | ((v4i)best & ~m));
            at = (offs[k] & m) | (at & ~m);
        }
        const int lanes = Wo - j < 4 ? (int)(Wo - j) : 4;
        memcpy(o + j, &best, lanes * sizeof(float));
        for (int l = 0; l < lanes; l++)
            ix[j + l] = (long long)(corner + 2u * (unsigned)(j + l) + (unsigned)at[l]);
    }
    return j < Wo ? j : Wo;
}

static long rows22_none(const double *r0, const double *r1, double *o, long long *ix, unsigned corner, unsigned w,
                        long Wo, int overread)
{
    (void)r0, (void)r1, (void)o, (void)ix, (void)corner, (void)w, (void)Wo, (void)overread;
    return 0;
}

/* 2x2 windows at stride 2 (LeNet's, VGG's): all four reads of an output in one pass along its row pair, the
 * index widened from unsigned (SSE2 has no signed 32->64 widening), about twice the offset passes' speed */
#define POOL22(NAME, T, U, VEC)                                                                               \
static void NAME(const T *x, T *out, long long *idx, long p0, long p1, long H, long W, long Ho, long Wo) \
{                                                                                                        \
    for (long p = p0; p < p1; p++) {                                                                     \
        for (long i = 0; i < Ho; i++) {                                                                  \
            const T *r0 = x + p * H * W + 2 * i * W, *r1 = r0 + W;                                       \
            T *o = out + (p * Ho + i) * Wo;                                                              \
            long long *ix = idx + (p * Ho + i) * Wo;                                                     \
            const unsigned corner = (unsigned)(2 * i * W), w = (unsigned)W;                              \
            for (long j = VEC(r0, r1, o, ix, corner, w, Wo, p + 1 < p1 || i + 1 < Ho); j < Wo; j++) {                              \
                T best = r0[2 * j];                                                                      \
                unsigned at = 0;                                                                         \
                STEP22(T, U, r0[2 * j + 1], 1u) STEP22(T, U, r1[2 * j], w)                                \
                STEP22(T, U, r1[2 * j + 1], w + 1u)         \
                o[j] = best;                                                                             \
                ix[j] = (long long)(corner + 2u * (unsigned)j + at);                                     \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
}

#define POOL(NAME, T, U, VEC)                                                                               \
POOL22(NAME##_22, T, U, VEC)                                                                               \
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

POOL(graphc_max_pool_f32, float, unsigned int, rows22_f32)
POOL(graphc_max_pool_f64, double, unsigned long long, rows22_none)

/* The gradient of max pooling, planes [p0, p1): each output's gradient sent to the input its index names, in
 * output order. Where windows overlap (ADD: ResNet's 3x3 at stride 2) the values are added in double and rounded
 * once: the sums of numpy's np.bincount(indices, weights=g) and its cast, bit for bit, without the flat int64 index
 * and 8-byte bins over the whole batch. Where they do not (LeNet's 2x2 at stride 2) each plane is zeroed and the
 * values stored: numpy's `dx[flat_index] = g`, bit for bit, a plane at a time in cache. Returns the number of
 * indices outside their plane (none are written; -1: no memory): the caller then runs numpy's kernel, which
 * reports them. The planes of idx and dx are in (C, N) order; g's plane (c, n) starts at c*sc + n*sn, so an
 * (N, C, Ho, Wo) gradient is read in place. */
#define POOL_SCATTER(NAME, T, ADD)                                                                        \
long NAME(const T *g, const long long *idx, T *dx, long p0, long p1, long HW, long HoWo, long N, long sc,   \
          long sn)                                                                                       \
{                                                                                                        \
    double *acc = ADD ? malloc(HW * sizeof(double)) : NULL;                                              \
    long bad = 0;                                                                                        \
    if (ADD && acc == NULL)                                                                              \
        return -1;                                                                                       \
    for (long p = p0; p < p1; p++) {                                                                     \
        const T *gp = g + (p / N) * sc + (p % N) * sn;                                                   \
        const long long *ip = idx + p * HoWo;                                                            \
        T *d = dx + p * HW;                                                                              \
        if (ADD)                                                                                         \
            memset(acc, 0, HW * sizeof(double));                                                         \
        else                                                                                             \
            memset(d, 0, HW * sizeof(T));                                                                \
        for (long q = 0; q < HoWo; q++) {                                                                \
            if ((unsigned long long)ip[q] >= (unsigned long long)HW)                                     \
                bad++;                                                                                   \
            else if (ADD)                                                                                \
                acc[ip[q]] += (double)gp[q];                                                             \
            else                                                                                         \
                d[ip[q]] = gp[q];                                                                        \
        }                                                                                                \
        if (ADD)                                                                                         \
            for (long k = 0; k < HW; k++)                                                                \
                d[k] = (T)acc[k];                                                                        \
    }                                                                                                    \
    free(acc);                                                                                           \
    return bad;                                                                                          \
}

POOL_SCATTER(graphc_max_pool_scatter_f32, float, 1)
POOL_SCATTER(graphc_max_pool_scatter_f64, double, 1)
POOL_SCATTER(graphc_max_pool_assign_f32, float, 0)
POOL_SCATTER(graphc_max_pool_assign_f64, double, 0)

/* Parts for lanes.c (graphc_lanes_run): part p of P takes planes [p*n/P, (p+1)*n/P), whichever lane runs it.
 * Pooling's args: x, out, idx, n, P, H, W, Ho, Wo, kh, kw, sh, sw. The scatters': g, idx, dx, n, P, HW, HoWo, N,
 * sc, sn, and an array of P longs that receives each part's count of indices outside their plane. */
#define POOL_PART(NAME, FN, T)                                                                            \
void NAME(const long *a, long p, long lane)                                                              \
{                                                                                                        \
    (void)lane;                                                                                          \
    const long n = a[3], P = a[4];                                                                       \
    FN((const T *)a[0], (T *)a[1], (long long *)a[2], p * n / P, (p + 1) * n / P, a[5], a[6], a[7], a[8], \
       a[9], a[10], a[11], a[12]);                                                                       \
}
#define SCATTER_PART(NAME, FN, T)                                                                         \
void NAME(const long *a, long p, long lane)                                                              \
{                                                                                                        \
    (void)lane;                                                                                          \
    const long n = a[3], P = a[4];                                                                       \
    ((long *)a[10])[p] = FN((const T *)a[0], (const long long *)a[1], (T *)a[2], p * n / P, (p + 1) * n / P, \
                            a[5], a[6], a[7], a[8], a[9]);                                               \
}

POOL_PART(graphc_max_pool_part_f32, graphc_max_pool_f32, float)
POOL_PART(graphc_max_pool_part_f64, graphc_max_pool_f64, double)
SCATTER_PART(graphc_max_pool_scatter_part_f32, graphc_max_pool_scatter_f32, float)
SCATTER_PART(graphc_max_pool_scatter_part_f64, graphc_max_pool_scatter_f64, double)
SCATTER_PART(graphc_max_pool_assign_part_f32, graphc_max_pool_assign_f32, float)
SCATTER_PART(graphc_max_pool_assign_part_f64, graphc_max_pool_assign_f64, double)
