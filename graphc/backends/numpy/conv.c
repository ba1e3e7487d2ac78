/* Direct convolution for convolutions with few channels (LeNet's 1->6 and 6->16, 3x3), where numpy's im2col
 * copies as much as the GEMM computes and OpenBLAS runs the skinny products at a fraction of its speed.
 * graphc/backends/numpy/conv.py calls these through ctypes (_c_conv); numpy's im2col + GEMM runs otherwise.
 *
 * Arrays are float32 in graphc's CNHW memory order: planes (C, N) of H*W each, stride 1. The input comes
 * already padded, followed by SLACK floats: whole vectors are read past the last column of a row, and what
 * their extra lanes compute is never stored (forward) or is masked off (weight gradient).
 *
 * Built with fp-contract=fast and, on x86-64 with GCC, a second clone for x86-64-v3 (AVX2 and FMA) picked
 * at load time. The sums are not BLAS's (no kernel promises BLAS's rounding); they are the same on every call
 * on one machine, because conv.py waits for this library's build rather than running numpy meanwhile. */
#include <string.h>

#define OB 6      /* output channels held in registers at once: 6 rows x 2 vectors = 12 accumulators
                     (the forward's register block is written out for 6) */

typedef float v8 __attribute__((vector_size(32)));
typedef int i8 __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__gnu_linux__)
/* (GCC 12 is the first to take an ISA level in target_clones; the clones need glibc's ifunc) */
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

static inline v8 load8(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }

/* lanes of (a, b) picked by constant indices: clang's builtin, or GCC's (older GCCs lack clang's) */
#if defined(__clang__)
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (i8){__VA_ARGS__})
#endif

/* out[o, n, i, j] = sum over k = (c*kh + a)*kw + b of w[o, k] * x[c, n, i + a, j + b], for images [n0, n1).
 * wp holds the weights packed per block of OB output channels as (K, OB), zero past O. Each output row is done
 * 16 positions at a time: position (i, j) reads x at (i + a)*W + j + b of its plane, so kernel offset k is one
 * shifted vector load shared by OB output channels, and the 16 sums of a channel are stored straight into its
 * row. A row's last block may run past Wo: its lanes past the row read the next row (or the input's slack) and
 * are dropped, the rest copied out. */
CLONES
void graphc_conv_f32(const float *x, const float *wp, float *out, long n0, long n1, long C, long N, long H,
                     long W, long O, long kh, long kw)
{
    const long Ho = H - kh + 1, Wo = W - kw + 1, K = C * kh * kw, plane = H * W;
    long off[K];  /* kernel offset k's shift from a position of image 0: one flat loop over k */
    for (long k = 0; k < K; k++)
        off[k] = (k / (kh * kw)) * N * plane + (k % (kh * kw) / kw) * W + k % kw;
    for (long n = n0; n < n1; n++) {
        const float *xn = x + n * plane;
        for (long o0 = 0; o0 < O; o0 += OB) {
            const float *wb = wp + (o0 / OB) * K * OB;
            const int rows = O - o0 < OB ? (int)(O - o0) : OB;
            float *op[OB];
            for (int r = 0; r < OB; r++)
                op[r] = out + ((o0 + (r < rows ? r : 0)) * N + n) * Ho * Wo;
            for (long i = 0; i < Ho; i++) {
                for (long j = 0; j < Wo; j += 16) {
                    v8 acc[OB][2];
                    v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0};
                    v8 b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0}, b4 = {0}, b5 = {0};
                    const float *xq = xn + i * W + j;
                    for (long k = 0; k < K; k++) {
                        const float *xp = xq + off[k], *wk = wb + k * OB;
                        const v8 x0 = load8(xp), x1 = load8(xp + 8);
                        a0 += wk[0] * x0; b0 += wk[0] * x1;
                        a1 += wk[1] * x0; b1 += wk[1] * x1;
                        a2 += wk[2] * x0; b2 += wk[2] * x1;
                        a3 += wk[3] * x0; b3 += wk[3] * x1;
                        a4 += wk[4] * x0; b4 += wk[4] * x1;
                        a5 += wk[5] * x0; b5 += wk[5] * x1;
                    }
                    acc[0][0] = a0; acc[0][1] = b0; acc[1][0] = a1; acc[1][1] = b1;
                    acc[2][0] = a2; acc[2][1] = b2; acc[3][0] = a3; acc[3][1] = b3;
                    acc[4][0] = a4; acc[4][1] = b4; acc[5][0] = a5; acc[5][1] = b5;
                    const long len = Wo - j < 16 ? Wo - j : 16;
                    for (int r = 0; r < rows; r++) {
                        float *dst = op[r] + i * Wo + j;
                        if (len == 16) {
                            memcpy(dst, &acc[r][0], 32);
                            memcpy(dst + 8, &acc[r][1], 32);
                        } else {
                            const float *src = (const float *)acc[r];
                            for (long t = 0; t < len; t++)
                                dst[t] = src[t];
                        }
                    }
                }
            }
        }
    }
}

/* The weight gradient with the output channels along the vector lanes: per image, g is transposed into gt
 * (positions, O rounded up to 8, zero-padded), and each position adds gt's row times one input value per
 * kernel offset, for KB offsets at a time (KB * OV accumulators, OV = vectors per row of gt). Only valid
 * positions are read, so no lane ever sees a value from outside the image. Per image the float accumulators
 * are added into the double totals. */
#define WGRAD(OV, KB)                                                                                     \
static void wgrad_##OV(const float *x, const float *gt, double *dw, long n, long N, long H, long W, long O,  \
                       long K, long kh, long kw)                                                          \
{                                                                                                         \
    const long Ho = H - kh + 1, Wo = W - kw + 1, plane = H * W, kk = kh * kw;                             \
    for (long k0 = 0; k0 < K; k0 += KB) {                                                                 \
        const long nk = K - k0 < KB ? K - k0 : KB;                                                        \
        long off[KB];                                                                                     \
        for (long t = 0; t < KB; t++) {                                                                   \
            const long k = k0 + (t < nk ? t : 0);                                                         \
            off[t] = ((k / kk) * N + n) * plane + (k % kk / kw) * W + k % kw;                             \
        }                                                                                                 \
        v8 acc[KB][OV];                                                                                   \
        for (int t = 0; t < KB; t++)                                                                      \
            for (int v = 0; v < OV; v++)                                                                  \
                acc[t][v] = (v8){0};                                                                      \
        for (long i = 0; i < Ho; i++) {                                                                   \
            const float *xr = x + i * W;                                                                  \
            const float *gr = gt + i * Wo * OV * 8;                                                       \
            for (long j = 0; j < Wo; j++) {                                                               \
                v8 gv[OV];                                                                                \
                for (int v = 0; v < OV; v++)                                                              \
                    gv[v] = load8(gr + (j * OV + v) * 8);                                                 \
                for (int t = 0; t < KB; t++) {                                                            \
                    const float xs = xr[off[t] + j];                                                      \
                    for (int v = 0; v < OV; v++)                                                          \
                        acc[t][v] += xs * gv[v];                                                          \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
        for (long t = 0; t < nk; t++)                                                                     \
            for (int v = 0; v < OV; v++)                                                                  \
                for (int l = 0; l < 8 && v * 8 + l < O; l++)                                              \
                    dw[(v * 8 + l) * K + k0 + t] += acc[t][v][l];                                         \
    }                                                                                                     \
}

CLONES WGRAD(1, 12)
CLONES WGRAD(2, 6)
CLONES WGRAD(3, 4)
CLONES WGRAD(4, 3)

/* gt[p][o] = g[o * so + p] for positions p < P and channels o < O, gt's rows 8*ov floats apart (lanes past O
 * stay as they are: zero). Blocks of 8 positions by 8 channels are transposed in registers (three rounds of
 * shuffles), the positions past the last block one by one. */
CLONES
static void transpose_in(float *gt, const float *g, long P, long O, long so, long ov)
{
    const long full = P / 8 * 8;
    for (long o0 = 0; o0 < O; o0 += 8) {
        const int rows = O - o0 < 8 ? (int)(O - o0) : 8;
        for (long p0 = 0; p0 < full; p0 += 8) {
            v8 r[8];
            for (int o = 0; o < 8; o++)
                r[o] = o < rows ? load8(g + (o0 + o) * so + p0) : (v8){0};
            v8 t[8], u[8];
            for (int k = 0; k < 4; k++) {
                t[2 * k] = SHUFFLE(r[2 * k], r[2 * k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
                t[2 * k + 1] = SHUFFLE(r[2 * k], r[2 * k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
            }
            for (int k = 0; k < 2; k++) {  /* rows 4k .. 4k+3: t[4k..4k+3] */
                u[4 * k] = SHUFFLE(t[4 * k], t[4 * k + 2], 0, 1, 8, 9, 4, 5, 12, 13);
                u[4 * k + 1] = SHUFFLE(t[4 * k], t[4 * k + 2], 2, 3, 10, 11, 6, 7, 14, 15);
                u[4 * k + 2] = SHUFFLE(t[4 * k + 1], t[4 * k + 3], 0, 1, 8, 9, 4, 5, 12, 13);
                u[4 * k + 3] = SHUFFLE(t[4 * k + 1], t[4 * k + 3], 2, 3, 10, 11, 6, 7, 14, 15);
            }
            for (int j = 0; j < 4; j++) {
                const v8 c = SHUFFLE(u[j], u[4 + j], 0, 1, 2, 3, 8, 9, 10, 11);
                const v8 d = SHUFFLE(u[j], u[4 + j], 4, 5, 6, 7, 12, 13, 14, 15);
                memcpy(gt + (p0 + j) * ov * 8 + o0, &c, 32);
                memcpy(gt + (p0 + 4 + j) * ov * 8 + o0, &d, 32);
            }
        }
        for (long p = full; p < P; p++)
            for (int o = 0; o < rows; o++)
                gt[p * ov * 8 + o0 + o] = g[(o0 + o) * so + p];
    }
}

/* The weight gradient over images [n0, n1) into dw (O, K) doubles. g's plane (o, n) of Ho*Wo floats starts at
 * o*so + n*sn (strides >= 0: an (N, O, Ho, Wo) gradient is read in place); gt is scratch of Ho*Wo * 8*ceil(O/8)
 * floats; O <= 32. */
void graphc_conv_wgrad_f32(const float *x, const float *g, double *dw, float *gt, long n0, long n1, long C,
                           long N, long H, long W, long O, long kh, long kw, long so, long sn)
{
    const long Ho = H - kh + 1, Wo = W - kw + 1, P = Ho * Wo, K = C * kh * kw, ov = (O + 7) / 8;
    for (long i = 0; i < O * K; i++)
        dw[i] = 0.0;
    for (long p = 0; p < P; p++)  /* the padding lanes, zero for every image */
        for (long o = O; o < ov * 8; o++)
            gt[p * ov * 8 + o] = 0.f;
    for (long n = n0; n < n1; n++) {
        transpose_in(gt, g + n * sn, P, O, so, ov);
        switch (ov) {
        case 1: wgrad_1(x, gt, dw, n, N, H, W, O, K, kh, kw); break;
        case 2: wgrad_2(x, gt, dw, n, N, H, W, O, K, kh, kw); break;
        case 3: wgrad_3(x, gt, dw, n, N, H, W, O, K, kh, kw); break;
        default: wgrad_4(x, gt, dw, n, N, H, W, O, K, kh, kw); break;
        }
    }
}

/* dst (C*N planes, H + 2ph, W + 2pw) = src with zero borders, for planes [p0, p1): plane (c, n) of src starts at
 * c*sc + n*sn floats, so an (N, C, H, W) array is read as (C, N, H, W) without a transposed copy first. numpy's
 * copy into the middle of a padded array goes row by row (13 floats at LeNet's second layer), 5x slower. */
void graphc_pad_f32(const float *src, float *dst, long p0, long p1, long N, long H, long W, long ph, long pw,
                    long sc, long sn)
{
    const long Hp = H + 2 * ph, Wp = W + 2 * pw;
    for (long p = p0; p < p1; p++) {
        const float *s = src + (p / N) * sc + (p % N) * sn;
        float *d = dst + p * Hp * Wp;
        memset(d, 0, (ph * Wp + pw) * sizeof(float));
        for (long i = 0; i < H; i++) {
            float *row = d + (ph + i) * Wp + pw;
            memcpy(row, s + i * W, W * sizeof(float));
            memset(row + W, 0, (i + 1 < H ? 2 * pw : pw + ph * Wp) * sizeof(float));
        }
    }
}

/* Parts for lanes.c (graphc_lanes_run): part p of P takes images [p*N/P, (p+1)*N/P), whichever lane runs it.
 * args: x, wp, out, C, N, H, W, O, kh, kw, P. */
void graphc_conv_part_f32(const long *a, long p, long lane)
{
    (void)lane;
    const long N = a[4], P = a[10];
    graphc_conv_f32((const float *)a[0], (const float *)a[1], (float *)a[2], p * N / P, (p + 1) * N / P, a[3], N,
                    a[5], a[6], a[7], a[8], a[9]);
}

/* args: x, g, dw (P sums of O*K doubles, D apart: part p's own), gt (one scratch per lane, of S floats each), C, N,
 * H, W, O, kh, kw, P, S, D, so, sn. */
void graphc_conv_wgrad_part_f32(const long *a, long p, long lane)
{
    const long C = a[4], N = a[5], O = a[8], kh = a[9], kw = a[10], P = a[11];
    graphc_conv_wgrad_f32((const float *)a[0], (const float *)a[1], (double *)a[2] + p * a[13],
                          (float *)a[3] + lane * a[12], p * N / P, (p + 1) * N / P, C, N, a[6], a[7], O, kh, kw,
                          a[14], a[15]);
}

/* args: src, dst, C*N, N, H, W, ph, pw, sc, sn, P: part p pads planes [p*CN/P, (p+1)*CN/P). */
void graphc_pad_part_f32(const long *a, long p, long lane)
{
    (void)lane;
    const long CN = a[2], P = a[10];
    graphc_pad_f32((const float *)a[0], (float *)a[1], p * CN / P, (p + 1) * CN / P, a[3], a[4], a[5], a[6], a[7],
                   a[8], a[9]);
}
