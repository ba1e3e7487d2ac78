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
