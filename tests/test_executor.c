/* The executor (run_in_executor): results come back on the loop thread,
 * errors fail the future, queued jobs can be cancelled, the loop stays live
 * while a job runs, and tn_loop_free neither hangs nor leaks with jobs in
 * flight. Ports what tornado/test/concurrent_test.py checks about executor
 * futures where it applies. */
#ifndef TN_NO_THREADS
#include "../tornado.h"
#include "tn_test.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

static tn_loop *new_loop_threads(int threads) {
    tn_loop *l = NULL;
    tn_loop_opts o;
    memset(&o, 0, sizeof o);
    o.executor_threads = threads;
    REQUIRE(test_loop_new(&l, &o) == 0);
    REQUIRE(l != NULL);
    return l;
}

static size_t live_jobs(tn_loop *l) {
    tn_loop_stats st;
    tn_loop_get_stats(l, &st);
    return st.jobs;
}

static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

/* State shared with worker threads is behind this lock. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int locked_get(const int *p) {
    int v;
    pthread_mutex_lock(&mu);
    v = *p;
    pthread_mutex_unlock(&mu);
    return v;
}
static void locked_add(int *p, int d) {
    pthread_mutex_lock(&mu);
    *p += d;
    pthread_mutex_unlock(&mu);
}

static int frees; /* loop thread only */
static void count_free(void *p) {
    frees++;
    free(p);
}

/* ------------------------------------------------------- loop thread */
struct thread_rec {
    pthread_t worker, done_on;
    int ran, done;
};
static int work_record_thread(void *arg, void **result) {
    struct thread_rec *r = (struct thread_rec *)arg;
    r->worker = pthread_self();
    r->ran = 1;
    *result = arg;
    return 0;
}
static void on_job_done(tn_future *f, void *arg) {
    struct thread_rec *r = (struct thread_rec *)arg;
    r->done_on = pthread_self();
    r->done = 1;
    CHECK_EQ_INT(tn_future_error(f), 0);
    CHECK(tn_future_value(f) == arg);
    tn_future_release(f);
}

TEST(executor_result_arrives_on_loop_thread) {
    tn_loop *l = new_loop_threads(0);
    struct thread_rec r;
    tn_future *f;
    int i;
    memset(&r, 0, sizeof r);
    f = tn_run_in_executor(l, work_record_thread, &r, NULL);
    REQUIRE(f != NULL);
    CHECK_EQ_INT(tn_future_on_done(f, on_job_done, &r), 0);
    for (i = 0; i < 1000 && !r.done; i++) CHECK_EQ_INT(tn_loop_step(l, 100), 0);
    CHECK_EQ_INT(r.done, 1);
    CHECK_EQ_INT(r.ran, 1);
    CHECK(!pthread_equal(r.worker, pthread_self())); /* the work ran elsewhere */
    CHECK(pthread_equal(r.done_on, pthread_self())); /* the result came home */
    FREE_LOOP_CLEAN(l);
}

/* The same from a coroutine. */
struct exec_co {
    tn_co co;
    struct thread_rec r;
    pthread_t resumed_on;
    int err;
};
static int exec_co_fn(tn_co *co) {
    struct exec_co *e = (struct exec_co *)co;
    TN_BEGIN(co);
    TN_AWAIT(co, tn_run_in_executor(co->loop, work_record_thread, &e->r, NULL));
    e->err = co->err;
    e->resumed_on = pthread_self();
    CHECK(co->value == &e->r);
    TN_END(co);
}

TEST(executor_awaited_from_coroutine) {
    tn_loop *l = new_loop_threads(2);
    struct exec_co e;
    memset(&e, 0, sizeof e);
    CHECK_EQ_INT(tn_run_sync(l, tn_spawn(l, &e.co, exec_co_fn), 0, NULL), 0);
    CHECK_EQ_INT(e.err, 0);
    CHECK_EQ_INT(e.r.ran, 1);
    CHECK(!pthread_equal(e.r.worker, pthread_self()));
    CHECK(pthread_equal(e.resumed_on, pthread_self()));
    FREE_LOOP_CLEAN(l);
}

/* ------------------------------------------------------------ many jobs */
static int many_ran;
static int work_identity(void *arg, void **result) {
    locked_add(&many_ran, 1);
    *result = arg;
    return 0;
}

TEST(executor_many_jobs_all_complete) {
    tn_loop *l = new_loop_threads(4);
    enum { N = 200 };
    static int slots[N];
    tn_future *fs[N];
    void *values[N];
    int i, ok = 1;
    many_ran = 0;
    for (i = 0; i < N; i++) {
        fs[i] = tn_run_in_executor(l, work_identity, &slots[i], NULL);
        REQUIRE(fs[i] != NULL);
    }
    CHECK(live_jobs(l) > 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, N, values), 0, NULL), 0);
    for (i = 0; i < N; i++)
        if (values[i] != &slots[i]) ok = 0;
    CHECK(ok);
    CHECK_EQ_INT(locked_get(&many_ran), N);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    FREE_LOOP_CLEAN(l);
}

/* A burst far larger than the pool, from one callback (so most of it waits
 * in the turn's hand-over list), every seventh job cancelled at once: each
 * other job runs exactly once and delivers its own slot; a cancelled one
 * fails with TN_ECANCELLED and never runs unless it had already started.
 * Twice, so the second burst starts from the state the first left. */
enum { BURST = 20000 };
static int burst_ran[BURST]; /* under mu */
static int work_burst(void *arg, void **result) {
    int *slot = (int *)arg;
    locked_add(&burst_ran[slot - burst_ran], 1);
    *result = slot;
    return 0;
}

TEST(executor_burst_runs_each_job_once_and_cancels_cleanly) {
    tn_loop *l = new_loop_threads(3);
    static tn_future *fs[BURST];
    static tn_settled res[BURST];
    int round, i, bad = 0, cancelled_ran = 0;
    for (round = 0; round < 2; round++) {
        pthread_mutex_lock(&mu);
        memset(burst_ran, 0, sizeof burst_ran);
        pthread_mutex_unlock(&mu);
        for (i = 0; i < BURST; i++) {
            REQUIRE((fs[i] = tn_run_in_executor(l, work_burst, &burst_ran[i], NULL)) != NULL);
            if (i % 7 == 3) tn_future_cancel(fs[i]);
        }
        CHECK_EQ_INT(tn_run_sync(l, tn_all_settled(l, fs, BURST, res), 60000, NULL), 0);
        for (i = 0; i < BURST; i++) {
            int ran = locked_get(&burst_ran[i]);
            if (i % 7 == 3) {
                if (res[i].err != TN_ECANCELLED || ran > 1) bad++;
                cancelled_ran += ran;
            } else if (res[i].err != 0 || res[i].value != &burst_ran[i] || ran != 1) {
                bad++;
            }
        }
        CHECK_EQ_INT(bad, 0);
        CHECK_EQ_INT(live_jobs(l), 0);
    }
    /* Cancelled right after submission, behind ~3 running jobs: nearly all
     * were dropped before they started. */
    CHECK(cancelled_ran < BURST / 7 / 2);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    FREE_LOOP_CLEAN(l);
}

static int max_conc, cur_conc;
static int work_overlap(void *arg, void **result) {
    (void)arg;
    pthread_mutex_lock(&mu);
    cur_conc++;
    if (cur_conc > max_conc) max_conc = cur_conc;
    pthread_mutex_unlock(&mu);
    sleep_ms(2);
    locked_add(&cur_conc, -1);
    *result = NULL;
    return 0;
}

TEST(executor_threads_option_bounds_concurrency) {
    tn_loop *l = new_loop_threads(1);
    tn_future *fs[6];
    int i;
    max_conc = cur_conc = 0;
    for (i = 0; i < 6; i++) fs[i] = tn_run_in_executor(l, work_overlap, NULL, NULL);
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, 6, NULL), 0, NULL), 0);
    CHECK_EQ_INT(locked_get(&max_conc), 1);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    FREE_LOOP_CLEAN(l);
}

/* ---------------------------------------------------------------- errors */
static int work_fail_with_result(void *arg, void **result) {
    int *p = (int *)malloc(sizeof *p);
    (void)arg;
    *result = p; /* a partial result: the runtime must free it */
    return -EIO;
}

TEST(executor_error_fails_future_and_frees_result) {
    tn_loop *l = new_loop_threads(1);
    void *v = &frees;
    frees = 0;
    CHECK_EQ_INT(tn_run_sync(l, tn_run_in_executor(l, work_fail_with_result, NULL, count_free), 0, &v),
                 -EIO);
    CHECK(v == NULL);
    CHECK_EQ_INT(frees, 1);
    FREE_LOOP_CLEAN(l);
}

static int work_alloc(void *arg, void **result) {
    int *p = (int *)malloc(sizeof *p);
    if (!p) return TN_ENOMEM;
    *p = (int)(intptr_t)arg;
    *result = p;
    return 0;
}

TEST(executor_owned_result_freed_unless_taken) {
    tn_loop *l = new_loop_threads(1);
    void *v = NULL;
    frees = 0;
    CHECK_EQ_INT(tn_run_sync(l, tn_run_in_executor(l, work_alloc, (void *)(intptr_t)8, count_free), 0, &v),
                 0);
    REQUIRE(v != NULL);
    CHECK_EQ_INT(*(int *)v, 8);
    CHECK_EQ_INT(frees, 0);
    count_free(v);
    CHECK_EQ_INT(tn_run_sync(l, tn_run_in_executor(l, work_alloc, (void *)(intptr_t)9, count_free), 0, NULL),
                 0);
    CHECK_EQ_INT(frees, 2);
    FREE_LOOP_CLEAN(l);
}

/* --------------------------------------------------------- cancellation */
/* Jobs that block on a pipe occupy every worker. */
static int block_rd = -1;
static int blockers_started, blockers_done;
static int work_block_on_pipe(void *arg, void **result) {
    char c;
    (void)arg;
    locked_add(&blockers_started, 1);
    if (read(block_rd, &c, 1) != 1) return -EIO;
    locked_add(&blockers_done, 1);
    *result = NULL;
    return 0;
}
static int victim_ran;
static int work_victim(void *arg, void **result) {
    (void)arg;
    locked_add(&victim_ran, 1);
    *result = NULL;
    return 0;
}

TEST(executor_cancel_queued_job_never_runs) {
    tn_loop *l = new_loop_threads(2);
    int p[2];
    tn_future *b[2], *victim, *after;
    void *v = &frees;
    REQUIRE(pipe(p) == 0);
    block_rd = p[0];
    blockers_started = blockers_done = victim_ran = 0;
    b[0] = tn_run_in_executor(l, work_block_on_pipe, NULL, NULL);
    b[1] = tn_run_in_executor(l, work_block_on_pipe, NULL, NULL);
    /* Both workers are (or will be) stuck on the pipe: these two wait in
     * the queue, behind the blockers. */
    victim = tn_run_in_executor(l, work_victim, NULL, NULL);
    after = tn_run_in_executor(l, work_identity, &frees, NULL);
    REQUIRE(b[0] && b[1] && victim && after);
    CHECK_EQ_INT(tn_future_cancel(victim), 0);
    CHECK(tn_future_done(victim));
    CHECK_EQ_INT(tn_future_error(victim), TN_ECANCELLED);
    tn_future_release(victim);
    REQUIRE(write(p[1], "xy", 2) == 2); /* unblock both */
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, b, 2, NULL), 0, NULL), 0);
    /* The job queued behind the cancelled one still runs. */
    CHECK_EQ_INT(tn_run_sync(l, after, 0, &v), 0);
    CHECK(v == &frees);
    CHECK_EQ_INT(locked_get(&victim_ran), 0);
    CHECK_EQ_INT(locked_get(&blockers_done), 2);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    FREE_LOOP_CLEAN(l);
    close(p[0]);
    close(p[1]);
}

static int work_block_then_alloc(void *arg, void **result) {
    char c;
    int *r;
    (void)arg;
    locked_add(&blockers_started, 1);
    if (read(block_rd, &c, 1) != 1) return -EIO;
    r = (int *)malloc(sizeof *r);
    *result = r;
    return 0;
}

TEST(executor_cancel_running_job_frees_its_result) {
    tn_loop *l = new_loop_threads(1);
    int p[2], i;
    tn_future *f;
    REQUIRE(pipe(p) == 0);
    block_rd = p[0];
    blockers_started = 0;
    frees = 0;
    f = tn_run_in_executor(l, work_block_then_alloc, NULL, count_free);
    for (i = 0; i < 5000 && !locked_get(&blockers_started); i++) sleep_ms(1);
    REQUIRE(locked_get(&blockers_started) == 1); /* it is running */
    CHECK_EQ_INT(tn_future_cancel(f), 0);
    /* A running job cannot be stopped: its future stays pending (so what
     * its arg points into stays valid) until it has returned. */
    CHECK(!tn_future_done(f));
    REQUIRE(write(p[1], "x", 1) == 1);
    /* It runs to its end; then the future fails, and its result, which
     * nobody can take, is freed. */
    for (i = 0; i < 1000 && live_jobs(l); i++) CHECK_EQ_INT(tn_loop_step(l, 100), 0);
    CHECK_EQ_INT(live_jobs(l), 0);
    CHECK(tn_future_done(f));
    CHECK_EQ_INT(tn_future_error(f), TN_ECANCELLED);
    tn_future_release(f);
    CHECK_EQ_INT(frees, 1);
    FREE_LOOP_CLEAN(l);
    close(p[0]);
    close(p[1]);
}

/* -------------------------------------------------- the loop stays live */
static int spin_stop, timer_ticks;
static int work_spin(void *arg, void **result) {
    volatile unsigned long x = 0;
    (void)arg;
    for (;;) {
        unsigned long i;
        for (i = 0; i < 10000; i++) x += i * i;
        if (locked_get(&spin_stop)) break;
    }
    *result = (void *)(uintptr_t)(x ? 1 : 2);
    return 0;
}
static void tick(tn_loop *l, void *arg) {
    (void)l;
    (void)arg;
    timer_ticks++;
    if (timer_ticks == 5) locked_add(&spin_stop, 1);
}

TEST(executor_loop_fires_timers_while_job_runs) {
    tn_loop *l = new_loop_threads(1);
    tn_timer t;
    tn_future *f;
    void *v = NULL;
    spin_stop = timer_ticks = 0;
    f = tn_run_in_executor(l, work_spin, NULL, NULL);
    CHECK_EQ_INT(tn_call_every(l, 1, tick, NULL, &t), 0);
    /* The job only ends after the loop's timer fired five times: this
     * completes only if the loop kept running timers meanwhile. */
    CHECK_EQ_INT(tn_run_sync(l, f, 0, &v), 0);
    CHECK(v != NULL);
    CHECK(timer_ticks >= 5);
    CHECK_EQ_INT(tn_cancel_timer(l, t), 0);
    FREE_LOOP_CLEAN(l);
}

/* ------------------------------------------------------------ shutdown */
static int slow_done, queued_ran;
static int work_slow(void *arg, void **result) {
    (void)arg;
    locked_add(&blockers_started, 1);
    sleep_ms(30);
    locked_add(&slow_done, 1);
    *result = malloc(16); /* delivered or freed at shutdown: never leaked */
    return 0;
}
static int work_count(void *arg, void **result) {
    (void)arg;
    locked_add(&queued_ran, 1);
    *result = malloc(8);
    return 0;
}

TEST(executor_loop_free_with_jobs_queued) {
    tn_loop *l = new_loop_threads(1);
    int i;
    blockers_started = slow_done = queued_ran = 0;
    tn_future_release(tn_run_in_executor(l, work_slow, NULL, free));
    for (i = 0; i < 20; i++) tn_future_release(tn_run_in_executor(l, work_count, NULL, free));
    for (i = 0; i < 5000 && !locked_get(&blockers_started); i++) sleep_ms(1);
    CHECK_EQ_INT(live_jobs(l), 21);
    /* Must return (no hang): the running job is waited for, the queued ones
     * are dropped; asan / valgrind check that nothing leaks. */
    tn_loop_free(l);
    CHECK_EQ_INT(locked_get(&slow_done), 1); /* joined, not abandoned */
    CHECK(locked_get(&queued_ran) < 20);     /* the queue was not drained first */
}

TEST(executor_not_started_until_used) {
    tn_loop *l = new_loop_threads(3);
    CHECK_EQ_INT(live_jobs(l), 0);
    FREE_LOOP_CLEAN(l); /* no threads to join: must not hang */
}
#else /* TN_NO_THREADS: the work runs inline and the future comes back done */
#include "../tornado.h"
#include "tn_test.h"

#include <errno.h>

static int inline_ran;
static int work_inline(void *arg, void **result) {
    inline_ran++;
    *result = arg;
    return arg ? 0 : -EIO;
}

TEST(executor_inline_without_threads) {
    tn_loop *l = NULL;
    tn_future *f;
    tn_loop_stats st;
    REQUIRE(test_loop_new(&l, NULL) == 0);
    f = tn_run_in_executor(l, work_inline, &inline_ran, NULL);
    REQUIRE(f != NULL);
    CHECK_EQ_INT(inline_ran, 1);
    CHECK(tn_future_done(f));
    CHECK(tn_future_value(f) == &inline_ran);
    tn_future_release(f);
    f = tn_run_in_executor(l, work_inline, NULL, NULL);
    CHECK_EQ_INT(tn_future_error(f), -EIO);
    tn_future_release(f);
    tn_loop_get_stats(l, &st);
    CHECK_EQ_INT(st.futures, 0);
    tn_loop_free(l);
}
#endif /* TN_NO_THREADS */

#ifndef TN_NO_THREADS
/* -------------------------------------------------- the job owns its arg */
struct owned_arg {
    int *freed; /* set when free_arg ran */
    int seen_freed; /* what fn saw of it, after its work */
};
static int owned_frees;
static void owned_free(void *p) {
    struct owned_arg *a = (struct owned_arg *)p;
    __atomic_store_n(a->freed, 1, __ATOMIC_SEQ_CST);
    locked_add(&owned_frees, 1);
    free(a);
}
static int work_owned(void *arg, void **result) {
    struct owned_arg *a = (struct owned_arg *)arg;
    char c;
    (void)result;
    locked_add(&blockers_started, 1);
    if (read(block_rd, &c, 1) != 1) return -EIO;
    a->seen_freed = __atomic_load_n(a->freed, __ATOMIC_SEQ_CST); /* arg still ours here */
    return a->seen_freed ? -EIO : 0;
}

/* A running job's arg is freed after fn returns (never under it), a queued
 * job's when it is cancelled (never leaked), and both futures fail with
 * TN_ECANCELLED only then. */
TEST(executor_owned_arg_is_freed_after_the_job_or_when_dropped) {
    tn_loop *l = new_loop_threads(1);
    int p[2], i, freed_running = 0, freed_queued = 0;
    struct owned_arg *a = (struct owned_arg *)calloc(1, sizeof *a), *b = (struct owned_arg *)calloc(1, sizeof *b);
    tn_future *running, *queued;
    REQUIRE(pipe(p) == 0 && a && b);
    block_rd = p[0];
    blockers_started = 0;
    owned_frees = 0;
    a->freed = &freed_running;
    b->freed = &freed_queued;
    running = tn_run_in_executor_owned(l, work_owned, a, owned_free, NULL);
    for (i = 0; i < 5000 && !locked_get(&blockers_started); i++) sleep_ms(1);
    REQUIRE(locked_get(&blockers_started) == 1);
    queued = tn_run_in_executor_owned(l, work_owned, b, owned_free, NULL); /* one thread: it waits */
    REQUIRE(running && queued);
    CHECK_EQ_INT(tn_future_cancel(queued), 0);
    CHECK(tn_future_done(queued));
    CHECK_EQ_INT(tn_future_error(queued), TN_ECANCELLED);
    CHECK_EQ_INT(freed_queued, 1); /* dropped: freed at once */
    CHECK_EQ_INT(tn_future_cancel(running), 0);
    CHECK(!tn_future_done(running));
    CHECK_EQ_INT(__atomic_load_n(&freed_running, __ATOMIC_SEQ_CST), 0);
    REQUIRE(write(p[1], "x", 1) == 1);
    for (i = 0; i < 1000 && live_jobs(l); i++) CHECK_EQ_INT(tn_loop_step(l, 100), 0);
    CHECK(tn_future_done(running));
    CHECK_EQ_INT(tn_future_error(running), TN_ECANCELLED);
    CHECK_EQ_INT(freed_running, 1);
    CHECK_EQ_INT(locked_get(&owned_frees), 2);
    tn_future_release(running);
    tn_future_release(queued);
    FREE_LOOP_CLEAN(l);
    close(p[0]);
    close(p[1]);
}
#endif /* TN_NO_THREADS */
