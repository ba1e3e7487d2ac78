/* graphc's second lane for C kernels: one helper thread that takes parts of a kernel's work.
 *
 * Handing half a kernel to a Python pool thread costs 0.1 ms here (the thread wakes, takes the GIL, and the
 * caller wakes again), more than a LeNet convolution takes on its own. This helper waits for work spinning on
 * one word for 0.1 ms (SPIN_NS) after each job, then sleeps on a condition variable, as OpenMP's threads do; the
 * caller pays a lock and a store. A job is `parts` calls fn(args, part, lane), claimed one at a time by the
 * caller (lane 0) and the helper (lane 1), so a helper that wakes late only takes fewer parts. What a part
 * computes must depend on the part, never on the lane: the kernels' numbers are then those of one thread.
 *
 * One job runs at a time: a caller that finds the lanes busy (another Python thread's kernel) runs its parts
 * alone. After fork() the child starts its own helper (the parent's thread does not come along). */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>

typedef void (*part_fn)(const long *args, long part, long lane);

#define SPIN_NS 100000L /* how long the helper spins for the next job before sleeping: LeNet's kernels follow each
                           other closer than this, and BLAS's own threads get the core back during its GEMMs */

static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER; /* held by the one caller whose job runs */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;   /* guards the job below */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int started, broken, asleep, registered;
static long gen;                                         /* the job's number; the helper polls it */
static part_fn job_fn;
static const long *job_args;
static long job_parts, job_next, job_done;

static long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* Claim and run parts of job g until none is left. */
static void work(long g, long lane)
{
    pthread_mutex_lock(&mu);
    while (gen == g && job_next < job_parts) {
        const long p = job_next++;
        const part_fn fn = job_fn;
        const long *args = job_args;
        pthread_mutex_unlock(&mu);
        fn(args, p, lane);
        __atomic_add_fetch(&job_done, 1, __ATOMIC_RELEASE);
        pthread_mutex_lock(&mu);
    }
    pthread_mutex_unlock(&mu);
}

static void *helper(void *first)
{
    long seen = (long)first; /* the last job before this thread started */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the Python main thread's business */
    for (;;) {
        const long t0 = now_ns();
        for (long i = 1; __atomic_load_n(&gen, __ATOMIC_ACQUIRE) == seen; i++) {
            relax();
            if (i % 256 == 0 && now_ns() - t0 > SPIN_NS) {
                pthread_mutex_lock(&mu);
                asleep = 1;
                while (gen == seen)
                    pthread_cond_wait(&wake, &mu);
                asleep = 0;
                pthread_mutex_unlock(&mu);
            }
        }
        seen = __atomic_load_n(&gen, __ATOMIC_ACQUIRE);
        work(seen, 1);
    }
    return NULL;
}

static void forked(void) /* in the child: no helper thread, and nobody holds the locks */
{
    pthread_mutex_init(&busy, NULL);
    pthread_mutex_init(&mu, NULL);
    pthread_cond_init(&wake, NULL);
    started = broken = asleep = 0;
    gen = 0;
}

static int helper_ready(void)
{
    if (started || broken)
        return started;
    if (!registered) {
        registered = 1;
        pthread_atfork(NULL, NULL, forked);
    }
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &at, helper, (void *)gen) == 0)
        started = 1;
    else
        broken = 1;
    pthread_attr_destroy(&at);
    return started;
}

/* fn(args, part, lane) for every part in [0, parts), on up to `lanes` threads (1 or 2). */
void graphc_lanes_run(part_fn fn, const long *args, long parts, long lanes)
{
    if (lanes < 2 || parts < 2 || pthread_mutex_trylock(&busy) != 0) {
        for (long p = 0; p < parts; p++)
            fn(args, p, 0);
        return;
    }
    if (!helper_ready()) {
        pthread_mutex_unlock(&busy);
        for (long p = 0; p < parts; p++)
            fn(args, p, 0);
        return;
    }
    pthread_mutex_lock(&mu);
    const long g = gen + 1;
    job_fn = fn;
    job_args = args;
    job_parts = parts;
    job_next = 0;
    __atomic_store_n(&job_done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&gen, g, __ATOMIC_RELEASE);
    if (asleep)
        pthread_cond_signal(&wake);
    pthread_mutex_unlock(&mu);
    work(g, 0);
    for (long i = 1; __atomic_load_n(&job_done, __ATOMIC_ACQUIRE) < parts; i++)  /* the helper's last part */
        if (i % 4096 == 0)
            sched_yield(); /* it lost its core: let it have ours */
        else
            relax();
    pthread_mutex_unlock(&busy);
}
