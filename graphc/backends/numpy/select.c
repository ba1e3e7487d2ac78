/* where(c, x, 0) and where(c, 0, x) with a bool condition, as bit masks: the selection of a ReLU's gradient
 * (graphc/backends/numpy/elementwise.py runs it once native.py has built it, and two numpy ufuncs otherwise,
 * with the same bits). Element i keeps x's bits where c[i] == keep, and is +0.0 elsewhere; the arrays are
 * dense and in one memory order. In place (out == x) has its own loop: the compiler vectorises a loop only
 * where it can prove the arrays apart, and an in-place call failed that check into scalar code (2x slower
 * than numpy's two ufuncs). */
#define SELECT(NAME, U)                                                                                   \
void NAME(const unsigned char *restrict c, const U *restrict x, U *restrict out, long s, long e, long keep) \
{                                                                                                        \
    const unsigned char k = (unsigned char)(keep != 0);                                                  \
    for (long i = s; i < e; i++)                                                                         \
        out[i] = x[i] & -(U)(c[i] == k);                                                                 \
}                                                                                                        \
void NAME##_inplace(const unsigned char *restrict c, U *restrict x, long s, long e, long keep)           \
{                                                                                                        \
    const unsigned char k = (unsigned char)(keep != 0);                                                  \
    for (long i = s; i < e; i++)                                                                         \
        x[i] &= -(U)(c[i] == k);                                                                         \
}

SELECT(graphc_select_u32, unsigned int)
SELECT(graphc_select_u64, unsigned long long)

/* Parts for lanes.c (graphc_lanes_run). args: c, x, out (the same address as x: in place), n, P, keep; part k
 * runs elements [k*(n/P), (k+1)*(n/P)) cut at multiples of 64, the last part up to n. */
#define SELECT_PART(NAME, U)                                                                              \
void NAME##_part(const long *a, long k, long lane)                                                       \
{                                                                                                        \
    const long n = a[3], P = a[4];                                                                       \
    const long s = k * (n / P) / 64 * 64, e = k + 1 == P ? n : (k + 1) * (n / P) / 64 * 64;              \
    (void)lane;                                                                                          \
    if (a[1] == a[2])                                                                                    \
        NAME##_inplace((const unsigned char *)a[0], (U *)a[1], s, e, a[5]);                             \
    else                                                                                                 \
        NAME((const unsigned char *)a[0], (const U *)a[1], (U *)a[2], s, e, a[5]);                       \
}

SELECT_PART(graphc_select_u32, unsigned int)
SELECT_PART(graphc_select_u64, unsigned long long)
