/* The event loop: callbacks, timers, periodic timers, fd handlers, signals,
 * stepping and stopping. Black-box against tornado.h's public API; ports the
 * behaviours tornado/test/ioloop_test.py checks where they apply.
 *
 * No test asserts a duration: only orders, counts, error codes and other
 * facts that hold however slow the machine (or valgrind) is. */
#include "../tornado.h"
#include "tn_test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Every test ends here: nothing the loop tracks may be left behind. */
static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

/* An order log shared by the callbacks of a test. */
static int order[256];
static int norder;
static void log_id(tn_loop *l, void *arg) {
    (void)l;
    if (norder < 256) order[norder] = (int)(intptr_t)arg;
    norder++;
}

static void set_flag(tn_loop *l, void *arg) {
    (void)l;
    (*(int *)arg)++;
}

static void stop_loop(tn_loop *l, void *arg) {
    (void)arg;
    tn_loop_stop(l);
}

/* Steps (blocking at most 50 ms each) until *counter reaches want, at most
 * max_steps times; returns the steps taken. */
static int step_until(tn_loop *l, const int *counter, int want, int max_steps) {
    int steps = 0;
    while (*counter < want && steps < max_steps) {
        CHECK_EQ_INT(tn_loop_step(l, 50), 0);
        steps++;
    }
    return steps;
}

/* ------------------------------------------------------------- creation */
TEST(loop_new_free_backend) {
    tn_loop *l = new_loop();
    tn_loop_stats st;
    const char *be = tn_loop_backend(l);
    REQUIRE(be != NULL);
#ifdef TN_BACKEND_POLL
    CHECK(strcmp(be, "poll") == 0);
#else
    CHECK(strcmp(be, "epoll") == 0);
#endif
    if (strcmp(be, "epoll") == 0) CHECK(tn_loop_fd(l) >= 0);
    else CHECK_EQ_INT(tn_loop_fd(l), -1);
    tn_loop_get_stats(l, &st);
    CHECK_EQ_INT(st.handlers, 0); /* the wake-up fd is internal */
    CHECK_EQ_INT(st.callbacks, 0);
    CHECK_EQ_INT(st.jobs, 0);
    FREE_LOOP_CLEAN(l);
}

TEST(loop_two_loops_independent) {
    tn_loop *a = new_loop(), *b = new_loop();
    int ca = 0, cb = 0;
    CHECK_EQ_INT(tn_add_callback(a, set_flag, &ca), 0);
    CHECK_EQ_INT(tn_add_callback(b, set_flag, &cb), 0);
    CHECK_EQ_INT(tn_loop_step(a, 0), 0);
    CHECK_EQ_INT(ca, 1);
    CHECK_EQ_INT(cb, 0);
    CHECK_EQ_INT(tn_loop_step(b, 0), 0);
    CHECK_EQ_INT(cb, 1);
    FREE_LOOP_CLEAN(a);
    FREE_LOOP_CLEAN(b);
}

TEST(loop_free_drops_pending_callbacks_and_timers) {
    /* Nothing runs at free; valgrind/asan check nothing leaks. */
    tn_loop *l = new_loop();
    int c = 0;
    CHECK_EQ_INT(tn_add_callback(l, set_flag, &c), 0);
    CHECK_EQ_INT(tn_call_later(l, 1000, set_flag, &c, NULL), 0);
    CHECK_EQ_INT(tn_call_every(l, 1000, set_flag, &c, NULL), 0);
    tn_loop_free(l);
    CHECK_EQ_INT(c, 0);
}

/* ------------------------------------------------------------ callbacks */
TEST(callbacks_fifo) {
    tn_loop *l = new_loop();
    int i;
    norder = 0;
    for (i = 0; i < 10; i++) CHECK_EQ_INT(tn_add_callback(l, log_id, (void *)(intptr_t)i), 0);
    CHECK_EQ_INT(norder, 0); /* nothing runs inside add_callback */
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(norder, 10);
    for (i = 0; i < 10; i++) CHECK_EQ_INT(order[i], i);
    FREE_LOOP_CLEAN(l);
}

TEST(callbacks_fifo_across_ring_growth) {
    /* Consume part of the queue, then queue enough to wrap around and grow
     * it while its head is mid-buffer: the order must survive. */
    tn_loop *l = new_loop();
    int i, ok = 1;
    norder = 0;
    for (i = 0; i < 40; i++) tn_add_callback(l, log_id, (void *)(intptr_t)i);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(norder, 40);
    norder = 0;
    for (i = 0; i < 200; i++) CHECK_EQ_INT(tn_add_callback(l, log_id, (void *)(intptr_t)i), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(norder, 200);
    for (i = 0; i < 200; i++)
        if (order[i] != i) ok = 0;
    CHECK(ok);
    FREE_LOOP_CLEAN(l);
}

static void chain_second(tn_loop *l, void *arg) {
    (void)arg;
    log_id(l, (void *)(intptr_t)2);
}
static void chain_first(tn_loop *l, void *arg) {
    (void)arg;
    log_id(l, (void *)(intptr_t)1);
    CHECK_EQ_INT(tn_add_callback(l, chain_second, NULL), 0);
}

TEST(callback_added_during_callback_runs_next_iteration) {
    tn_loop *l = new_loop();
    int other = 0;
    norder = 0;
    CHECK_EQ_INT(tn_add_callback(l, chain_first, NULL), 0);
    CHECK_EQ_INT(tn_add_callback(l, set_flag, &other), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(norder, 1); /* chain_second waits for the next iteration */
    CHECK_EQ_INT(other, 1);  /* but everything queued before the pass ran */
    CHECK_EQ_INT(tn_loop_next_timeout(l), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(norder, 2);
    CHECK_EQ_INT(order[0], 1);
    CHECK_EQ_INT(order[1], 2);
    FREE_LOOP_CLEAN(l);
}

/* A callback that re-queues itself runs once per iteration: it cannot
 * starve I/O. */
static int requeue_count, requeue_limit;
static void requeue_self(tn_loop *l, void *arg) {
    requeue_count++;
    if (requeue_count < requeue_limit) tn_add_callback(l, requeue_self, arg);
}
static int io_calls;
static void count_io(tn_loop *l, int fd, unsigned events, void *arg) {
    (void)l;
    (void)fd;
    (void)arg;
    if (events & TN_READ) io_calls++;
}

TEST(callback_requeueing_itself_does_not_starve_io) {
    tn_loop *l = new_loop();
    int p[2], i;
    REQUIRE(pipe(p) == 0);
    REQUIRE(write(p[1], "x", 1) == 1);
    requeue_count = 0;
    requeue_limit = 1000000;
    io_calls = 0;
    CHECK_EQ_INT(tn_add_handler(l, p[0], TN_READ, count_io, NULL), 0);
    CHECK_EQ_INT(tn_add_callback(l, requeue_self, NULL), 0);
    for (i = 0; i < 5; i++) CHECK_EQ_INT(tn_loop_step(l, -1), 0); /* never blocks */
    CHECK_EQ_INT(requeue_count, 5);
    CHECK_EQ_INT(io_calls, 5); /* level-triggered and never starved */
    requeue_limit = 0;           /* the next run stops re-queueing */
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(tn_remove_handler(l, p[0]), 0);
    close(p[0]);
    close(p[1]);
    FREE_LOOP_CLEAN(l);
}

/* ------------------------------------------------- cross-thread wake-up */
#ifndef TN_NO_THREADS
struct ts_ctx {
    tn_loop *loop;
    int ran;
    pthread_t ran_on;
};
static void ts_stop(tn_loop *l, void *arg) {
    struct ts_ctx *c = (struct ts_ctx *)arg;
    c->ran++;
    c->ran_on = pthread_self();
    tn_loop_stop(l);
}
static void *ts_thread(void *arg) {
    struct ts_ctx *c = (struct ts_ctx *)arg;
    sleep_ms(30); /* let the loop block in its poll first */
    tn_add_callback_threadsafe(c->loop, ts_stop, c);
    return NULL;
}

TEST(add_callback_threadsafe_wakes_blocked_run) {
    tn_loop *l = new_loop();
    struct ts_ctx c;
    pthread_t t;
    memset(&c, 0, sizeof c);
    c.loop = l;
    REQUIRE(pthread_create(&t, NULL, ts_thread, &c) == 0);
    /* Nothing else is scheduled: only the other thread's wake-up can end
     * this run (a hang here is the failure, caught by the runner's alarm). */
    CHECK_EQ_INT(tn_loop_run(l), 0);
    pthread_join(t, NULL);
    CHECK_EQ_INT(c.ran, 1);
    CHECK(pthread_equal(c.ran_on, pthread_self()));
    FREE_LOOP_CLEAN(l);
}

#define TS_THREADS 4
#define TS_PER_THREAD 200
struct ts_many {
    tn_loop *loop;
    int id;
};
static int ts_last[TS_THREADS];
static int ts_total, ts_out_of_order;
static void ts_count(tn_loop *l, void *arg) {
    int v = (int)(intptr_t)arg, th = v / TS_PER_THREAD, k = v % TS_PER_THREAD;
    (void)l;
    if (k != ts_last[th] + 1) ts_out_of_order++;
    ts_last[th] = k;
    ts_total++;
}
static void *ts_many_thread(void *arg) {
    struct ts_many *m = (struct ts_many *)arg;
    int k;
    for (k = 0; k < TS_PER_THREAD; k++)
        tn_add_callback_threadsafe(m->loop, ts_count, (void *)(intptr_t)(m->id * TS_PER_THREAD + k));
    return NULL;
}

TEST(add_callback_threadsafe_many_threads_none_lost) {
    tn_loop *l = new_loop();
    struct ts_many m[TS_THREADS];
    pthread_t t[TS_THREADS];
    int i, steps = 0;
    ts_total = ts_out_of_order = 0;
    for (i = 0; i < TS_THREADS; i++) {
        ts_last[i] = -1;
        m[i].loop = l;
        m[i].id = i;
        REQUIRE(pthread_create(&t[i], NULL, ts_many_thread, &m[i]) == 0);
    }
    while (ts_total < TS_THREADS * TS_PER_THREAD && steps < 100000) {
        CHECK_EQ_INT(tn_loop_step(l, 100), 0);
        steps++;
    }
    for (i = 0; i < TS_THREADS; i++) pthread_join(t[i], NULL);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(ts_total, TS_THREADS * TS_PER_THREAD); /* none lost, none twice */
    CHECK_EQ_INT(ts_out_of_order, 0);                   /* FIFO per thread */
    FREE_LOOP_CLEAN(l);
}
#endif

/* ---------------------------------------------------- run / stop / step */
TEST(stop_before_run_returns_at_once) {
    tn_loop *l = new_loop();
    int c = 0;
    tn_loop_stop(l);
    /* Nothing would ever wake this run: it must not block. */
    CHECK_EQ_INT(tn_loop_run(l), 0);
    /* The request was consumed: the next run runs until a new stop. */
    CHECK_EQ_INT(tn_call_later(l, 1, set_flag, &c, NULL), 0);
    CHECK_EQ_INT(tn_call_later(l, 5, stop_loop, NULL, NULL), 0);
    CHECK_EQ_INT(tn_loop_run(l), 0);
    CHECK_EQ_INT(c, 1);
    FREE_LOOP_CLEAN(l);
}

TEST(stop_from_callback_ends_run_after_iteration) {
    tn_loop *l = new_loop();
    int before = 0;
    CHECK_EQ_INT(tn_add_callback(l, stop_loop, NULL), 0);
    CHECK_EQ_INT(tn_add_callback(l, set_flag, &before), 0);
    CHECK_EQ_INT(tn_loop_run(l), 0);
    CHECK_EQ_INT(before, 1); /* the rest of that iteration still ran */
    FREE_LOOP_CLEAN(l);
}

static int reentrant_rc, reentrant_sync_rc;
static void try_reenter(tn_loop *l, void *arg) {
    tn_future *f = tn_future_new(l);
    (void)arg;
    reentrant_rc = tn_loop_run(l);
    /* run_sync consumes f even when it refuses to run. */
    reentrant_sync_rc = tn_run_sync(l, f, 0, NULL);
    if (f && tn_future_resolve(f, NULL) != 0) reentrant_sync_rc = 12345;
    tn_loop_stop(l);
}

TEST(run_is_not_reentrant) {
    tn_loop *l = new_loop();
    reentrant_rc = reentrant_sync_rc = 0;
    CHECK_EQ_INT(tn_add_callback(l, try_reenter, NULL), 0);
    CHECK_EQ_INT(tn_loop_run(l), 0);
    CHECK_EQ_INT(reentrant_rc, TN_ESTATE);
    CHECK_EQ_INT(reentrant_sync_rc, TN_ESTATE);
    FREE_LOOP_CLEAN(l);
}

TEST(step_zero_does_not_block) {
    tn_loop *l = new_loop();
    int c = 0, i;
    tn_timer t;
    /* Idle: nothing could ever wake it, so a blocking step would hang. */
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(tn_call_later(l, 60000, set_flag, &c, &t), 0);
    for (i = 0; i < 3; i++) CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(c, 0);
    CHECK_EQ_INT(tn_cancel_timer(l, t), 0);
    FREE_LOOP_CLEAN(l);
}

TEST(step_bounded_wait_returns) {
    tn_loop *l = new_loop();
    int c = 0;
    tn_timer t;
    CHECK_EQ_INT(tn_call_later(l, 60000, set_flag, &c, &t), 0);
    CHECK_EQ_INT(tn_loop_step(l, 5), 0); /* returns though the timer is far */
    CHECK_EQ_INT(c, 0);
    CHECK_EQ_INT(tn_cancel_timer(l, t), 0);
    FREE_LOOP_CLEAN(l);
}

TEST(next_timeout_values) {
    tn_loop *l = new_loop();
    int c = 0, to;
    tn_timer t;
    CHECK_EQ_INT(tn_loop_next_timeout(l), -1); /* idle */
    CHECK_EQ_INT(tn_add_callback(l, set_flag, &c), 0);
    CHECK_EQ_INT(tn_loop_next_timeout(l), 0); /* a callback is pending */
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(c, 1);
    CHECK_EQ_INT(tn_loop_next_timeout(l), -1);
    CHECK_EQ_INT(tn_call_later(l, 10000, set_flag, &c, &t), 0);
    to = tn_loop_next_timeout(l);
    CHECK(to > 0);
    CHECK(to <= 10000);
    CHECK_EQ_INT(tn_cancel_timer(l, t), 0);
    CHECK_EQ_INT(tn_loop_next_timeout(l), -1);
    /* A timer already due: 0. */
    CHECK_EQ_INT(tn_call_later(l, 0, set_flag, &c, NULL), 0);
    CHECK_EQ_INT(tn_loop_next_timeout(l), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(c, 2);
    CHECK_EQ_INT(tn_loop_next_timeout(l), -1);
    FREE_LOOP_CLEAN(l);
}

TEST(time_ms_advances_with_timers) {
    tn_loop *l = new_loop();
    int c = 0;
    uint64_t t0 = tn_time_ms(l), t1;
    CHECK_EQ_INT(tn_call_later(l, 5, set_flag, &c, NULL), 0);
    step_until(l, &c, 1, 10000);
    CHECK_EQ_INT(c, 1);
    t1 = tn_time_ms(l);
    CHECK(t1 >= t0 + 5); /* a timer never fires early */
    FREE_LOOP_CLEAN(l);
}

/* ---------------------------------------------------------------- timers */
TEST(timers_order_by_deadline) {
    tn_loop *l = new_loop();
    norder = 0;
    CHECK_EQ_INT(tn_call_later(l, 30, log_id, (void *)(intptr_t)30, NULL), 0);
    CHECK_EQ_INT(tn_call_later(l, 10, log_id, (void *)(intptr_t)10, NULL), 0);
    CHECK_EQ_INT(tn_call_later(l, 20, log_id, (void *)(intptr_t)20, NULL), 0);
    CHECK_EQ_INT(tn_call_later(l, 0, log_id, (void *)(intptr_t)0, NULL), 0);
    step_until(l, &norder, 4, 10000);
    REQUIRE(norder == 4);
    CHECK_EQ_INT(order[0], 0);
    CHECK_EQ_INT(order[1], 10);
    CHECK_EQ_INT(order[2], 20);
    CHECK_EQ_INT(order[3], 30);
    FREE_LOOP_CLEAN(l);
}

TEST(timers_equal_deadlines_fifo) {
    tn_loop *l = new_loop();
    int i;
    uint64_t when = tn_time_ms(l) + 3;
    norder = 0;
    /* No step in between: the cached clock is the same for all of them. */
    for (i = 0; i < 8; i++) CHECK_EQ_INT(tn_call_later(l, 3, log_id, (void *)(intptr_t)i, NULL), 0);
    for (i = 8; i < 16; i++) CHECK_EQ_INT(tn_call_at(l, when, log_id, (void *)(intptr_t)i, NULL), 0);
    step_until(l, &norder, 16, 10000);
    REQUIRE(norder == 16);
    for (i = 0; i < 16; i++) CHECK_EQ_INT(order[i], i);
    FREE_LOOP_CLEAN(l);
}

TEST(call_at_orders_with_call_later_and_past_deadline) {
    tn_loop *l = new_loop();
    uint64_t now = tn_time_ms(l);
    norder = 0;
    CHECK_EQ_INT(tn_call_at(l, now + 20, log_id, (void *)(intptr_t)3, NULL), 0);
    CHECK_EQ_INT(tn_call_later(l, 10, log_id, (void *)(intptr_t)2, NULL), 0);
    CHECK_EQ_INT(tn_call_at(l, 0, log_id, (void *)(intptr_t)1, NULL), 0); /* in the past */
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK(norder >= 1); /* the past deadline is due at once (and first) */
    CHECK_EQ_INT(order[0], 1);
    step_until(l, &norder, 3, 10000);
    REQUIRE(norder == 3);
    CHECK_EQ_INT(order[1], 2);
    CHECK_EQ_INT(order[2], 3);
    CHECK(tn_time_ms(l) >= now + 20);
    FREE_LOOP_CLEAN(l);
}

TEST(timer_cancel_and_stale_handles) {
    tn_loop *l = new_loop();
    tn_timer a, b, c2;
    int ca = 0, cb = 0, cc = 0;
    CHECK_EQ_INT(tn_call_later(l, 1, set_flag, &ca, &a), 0);
    CHECK_EQ_INT(tn_call_later(l, 1, set_flag, &cb, &b), 0);
    CHECK(a != 0);
    CHECK(b != 0);
    CHECK(a != b);
    CHECK_EQ_INT(tn_cancel_timer(l, a), 0);
    CHECK_EQ_INT(tn_cancel_timer(l, a), TN_ENOENT); /* twice */
    step_until(l, &cb, 1, 10000);
    CHECK_EQ_INT(ca, 0);
    CHECK_EQ_INT(cb, 1);
    CHECK_EQ_INT(tn_cancel_timer(l, b), TN_ENOENT); /* already fired */
    CHECK_EQ_INT(tn_cancel_timer(l, 0), TN_ENOENT);
    CHECK_EQ_INT(tn_cancel_timer(l, (tn_timer)0xdeadbeef12345678ull), TN_ENOENT);
    /* A new timer may reuse the storage of a dead one, never its handle. */
    CHECK_EQ_INT(tn_call_later(l, 1, set_flag, &cc, &c2), 0);
    CHECK(c2 != a);
    CHECK(c2 != b);
    CHECK_EQ_INT(tn_cancel_timer(l, a), TN_ENOENT);
    CHECK_EQ_INT(tn_cancel_timer(l, b), TN_ENOENT);
    step_until(l, &cc, 1, 10000);
    CHECK_EQ_INT(cc, 1); /* the stale cancels did not touch it */
    FREE_LOOP_CLEAN(l);
}

/* Two timers due in the same pass; the first cancels the second, which must
 * not run (ioloop_test's test_remove_timeout_from_timeout). */
static tn_timer victim_timer;
static int victim_ran, cancel_rc;
static void cancel_victim(tn_loop *l, void *arg) {
    (void)arg;
    cancel_rc = tn_cancel_timer(l, victim_timer);
}
static void victim(tn_loop *l, void *arg) {
    (void)l;
    (void)arg;
    victim_ran++;
}

TEST(timer_cancel_from_timer_in_same_pass) {
    tn_loop *l = new_loop();
    int done = 0;
    victim_ran = 0;
    cancel_rc = 1;
    CHECK_EQ_INT(tn_call_later(l, 2, cancel_victim, NULL, NULL), 0);
    CHECK_EQ_INT(tn_call_later(l, 2, victim, NULL, &victim_timer), 0);
    CHECK_EQ_INT(tn_call_later(l, 2, set_flag, &done, NULL), 0);
    /* Make sure all three are due when the pass begins. */
    sleep_ms(5);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    step_until(l, &done, 1, 10000);
    CHECK_EQ_INT(done, 1);
    CHECK_EQ_INT(cancel_rc, 0);
    CHECK_EQ_INT(victim_ran, 0);
    FREE_LOOP_CLEAN(l);
}

/* The reverse: the second cancels the first, which already ran. */
static tn_timer first_timer;
static int first_ran;
static void first(tn_loop *l, void *arg) {
    (void)l;
    (void)arg;
    first_ran++;
}
static void cancel_first(tn_loop *l, void *arg) {
    (void)arg;
    cancel_rc = tn_cancel_timer(l, first_timer);
}

TEST(timer_cancel_of_fired_timer_from_timer) {
    tn_loop *l = new_loop();
    first_ran = 0;
    cancel_rc = 1;
    CHECK_EQ_INT(tn_call_later(l, 1, first, NULL, &first_timer), 0);
    CHECK_EQ_INT(tn_call_later(l, 1, cancel_first, NULL, NULL), 0);
    sleep_ms(3);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(first_ran, 1);
    CHECK_EQ_INT(cancel_rc, TN_ENOENT);
    FREE_LOOP_CLEAN(l);
}

TEST(timer_mass_cancel_leaves_nothing) {
    /* ioloop_test's test_remove_timeout_cleanup: cancelled timers do not
     * linger. */
    tn_loop *l = new_loop();
    tn_timer t[1000];
    tn_loop_stats st;
    int i, c = 0;
    for (i = 0; i < 1000; i++) CHECK_EQ_INT(tn_call_later(l, 3600000, set_flag, &c, &t[i]), 0);
    tn_loop_get_stats(l, &st);
    CHECK_EQ_INT(st.timers, 1000);
    for (i = 0; i < 1000; i += 2) CHECK_EQ_INT(tn_cancel_timer(l, t[i]), 0);
    for (i = 1; i < 1000; i += 2) CHECK_EQ_INT(tn_cancel_timer(l, t[i]), 0);
    tn_loop_get_stats(l, &st);
    CHECK_EQ_INT(st.timers, 0);
    CHECK_EQ_INT(tn_loop_next_timeout(l), -1);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(c, 0);
    FREE_LOOP_CLEAN(l);
}

#define MANY_TIMERS 10000
struct fired {
    uint32_t delay, idx;
};
static struct fired *fired_log;
static int nfired;
static uint32_t *timer_delay;
static void log_fire(tn_loop *l, void *arg) {
    uint32_t idx = (uint32_t)(uintptr_t)arg;
    (void)l;
    fired_log[nfired].delay = timer_delay[idx];
    fired_log[nfired].idx = idx;
    nfired++;
}

TEST(timers_10k_random_fire_in_deadline_order) {
    tn_loop *l = new_loop();
    tn_timer *handles = (tn_timer *)malloc(MANY_TIMERS * sizeof *handles);
    unsigned seed = 12345;
    int i, bad = 0, cancelled = 0, steps = 0;
    fired_log = (struct fired *)malloc(MANY_TIMERS * sizeof *fired_log);
    timer_delay = (uint32_t *)malloc(MANY_TIMERS * sizeof *timer_delay);
    REQUIRE(handles && fired_log && timer_delay);
    nfired = 0;
    /* All scheduled with one cached clock value: deadline order is delay
     * order, and equal delays must keep their scheduling order. */
    for (i = 0; i < MANY_TIMERS; i++) {
        seed = seed * 1103515245u + 12345u;
        timer_delay[i] = (seed >> 16) % 25;
        if (tn_call_later(l, timer_delay[i], log_fire, (void *)(uintptr_t)i, &handles[i])) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    /* Cancel every seventh: the heap must stay ordered around the holes. */
    for (i = 0; i < MANY_TIMERS; i += 7) {
        CHECK_EQ_INT(tn_cancel_timer(l, handles[i]), 0);
        cancelled++;
    }
    while (nfired < MANY_TIMERS - cancelled && steps < 100000) {
        CHECK_EQ_INT(tn_loop_step(l, 50), 0);
        steps++;
    }
    CHECK_EQ_INT(nfired, MANY_TIMERS - cancelled);
    bad = 0;
    for (i = 0; i < nfired; i++) {
        if (fired_log[i].idx % 7 == 0) bad++; /* a cancelled one ran */
        if (i > 0) {
            if (fired_log[i].delay < fired_log[i - 1].delay) bad++;
            if (fired_log[i].delay == fired_log[i - 1].delay && fired_log[i].idx < fired_log[i - 1].idx)
                bad++;
        }
    }
    CHECK_EQ_INT(bad, 0);
    free(handles);
    free(fired_log);
    free(timer_delay);
    FREE_LOOP_CLEAN(l);
}

/* A timer that re-schedules itself with no delay must not starve I/O. */
static int zero_timer_runs, zero_timer_stop;
static void zero_timer(tn_loop *l, void *arg) {
    (void)arg;
    zero_timer_runs++;
    if (!zero_timer_stop) tn_call_later(l, 0, zero_timer, NULL, NULL);
}

TEST(zero_delay_timer_chain_does_not_starve_io) {
    tn_loop *l = new_loop();
    int p[2], i;
    REQUIRE(pipe(p) == 0);
    REQUIRE(write(p[1], "x", 1) == 1);
    io_calls = 0;
    zero_timer_runs = zero_timer_stop = 0;
    CHECK_EQ_INT(tn_add_handler(l, p[0], TN_READ, count_io, NULL), 0);
    CHECK_EQ_INT(tn_call_later(l, 0, zero_timer, NULL, NULL), 0);
    for (i = 0; i < 5; i++) CHECK_EQ_INT(tn_loop_step(l, -1), 0);
    CHECK(zero_timer_runs >= 1);
    CHECK(zero_timer_runs <= 5); /* once per pass, not forever in one pass */
    CHECK_EQ_INT(io_calls, 5);
    zero_timer_stop = 1;
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(tn_remove_handler(l, p[0]), 0);
    close(p[0]);
    close(p[1]);
    FREE_LOOP_CLEAN(l);
}

/* -------------------------------------------------------------- periodic */
static int periodic_runs;
static tn_timer periodic_handle;
static int periodic_cancel_at, periodic_cancel_rc;
static void periodic_cb(tn_loop *l, void *arg) {
    (void)arg;
    periodic_runs++;
    if (periodic_runs == periodic_cancel_at) periodic_cancel_rc = tn_cancel_timer(l, periodic_handle);
}

/* Timer slots: a timer started after frees of half as many slots as there
 * are rebuilds the free list in index order first (new timers fill memory in order instead of
 * taking the slots in the random order timers fired in). Slots of timers
 * still pending are skipped, their handles still work, stale ones do not. */
static void count_hit(tn_loop *l, void *arg) {
    (void)l;
    (*(int *)arg)++;
}
static size_t pending_timers(tn_loop *l) {
    tn_loop_stats st;
    tn_loop_get_stats(l, &st);
    return st.timers;
}

TEST(timer_slots_are_handed_out_in_index_order_after_churn) {
    enum { KEEP = 100, BURST = 5000, ROUNDS = 3 };
    tn_loop *l = new_loop();
    static tn_timer keep[KEEP], burst[BURST];
    int kept_hits = 0, hits = 0, i, r, ordered = 1;
    for (i = 0; i < KEEP; i++) REQUIRE(tn_call_later(l, 600000, count_hit, &kept_hits, &keep[i]) == 0);
    for (r = 0; r < ROUNDS; r++) {
        for (i = 0; i < BURST; i++) REQUIRE(tn_call_later(l, 0, count_hit, &hits, &burst[i]) == 0);
        /* every third one cancelled, from the far end (out of order) */
        for (i = BURST - 1; i >= 0; i -= 3) CHECK_EQ_INT(tn_cancel_timer(l, burst[i]), 0);
        while (pending_timers(l) > KEEP) CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    }
    CHECK_EQ_INT(hits, ROUNDS * (BURST - (BURST + 2) / 3));
    CHECK_EQ_INT(kept_hits, 0);
    /* the last round's handles are stale now */
    for (i = 0; i < BURST; i += 499) CHECK_EQ_INT(tn_cancel_timer(l, burst[i]), TN_ENOENT);
    /* new timers take the lowest free slots, in order: the kept ones hold
     * slots 1..KEEP, so these are KEEP+1, KEEP+2, ... */
    for (i = 0; i < BURST; i++) {
        REQUIRE(tn_call_later(l, 600000, count_hit, &hits, &burst[i]) == 0);
        if ((uint32_t)(burst[i] & 0xffffffffu) != (uint32_t)(KEEP + 1 + i)) ordered = 0;
    }
    CHECK(ordered);
    for (i = 0; i < BURST; i++) CHECK_EQ_INT(tn_cancel_timer(l, burst[i]), 0);
    for (i = 0; i < KEEP; i++) CHECK_EQ_INT(tn_cancel_timer(l, keep[i]), 0);
    CHECK_EQ_INT(kept_hits, 0);
    FREE_LOOP_CLEAN(l);
}

TEST(periodic_runs_repeatedly_and_cancel_from_inside_stops_it) {
    tn_loop *l = new_loop();
    int guard = 0;
    periodic_runs = 0;
    periodic_cancel_at = 5;
    periodic_cancel_rc = 1;
    CHECK_EQ_INT(tn_call_every(l, 0, periodic_cb, NULL, NULL), TN_EINVAL);
    CHECK_EQ_INT(tn_call_every(l, 2, periodic_cb, NULL, &periodic_handle), 0);
    step_until(l, &periodic_runs, 5, 10000);
    CHECK_EQ_INT(periodic_runs, 5);
    CHECK_EQ_INT(periodic_cancel_rc, 0);
    /* Let several intervals pass: it stays stopped. */
    CHECK_EQ_INT(tn_call_later(l, 20, set_flag, &guard, NULL), 0);
    step_until(l, &guard, 1, 10000);
    CHECK_EQ_INT(periodic_runs, 5);
    CHECK_EQ_INT(tn_cancel_timer(l, periodic_handle), TN_ENOENT);
    FREE_LOOP_CLEAN(l);
}

TEST(periodic_cancel_from_outside) {
    tn_loop *l = new_loop();
    int guard = 0, runs;
    periodic_runs = 0;
    periodic_cancel_at = -1;
    CHECK_EQ_INT(tn_call_every(l, 1, periodic_cb, NULL, &periodic_handle), 0);
    step_until(l, &periodic_runs, 3, 10000);
    CHECK(periodic_runs >= 3);
    CHECK_EQ_INT(tn_cancel_timer(l, periodic_handle), 0);
    runs = periodic_runs;
    CHECK_EQ_INT(tn_call_later(l, 10, set_flag, &guard, NULL), 0);
    step_until(l, &guard, 1, 10000);
    CHECK_EQ_INT(periodic_runs, runs);
    FREE_LOOP_CLEAN(l);
}

/* A periodic callback that blocks the loop for 3.5 intervals on its first
 * run. Bunched catch-up would make the three missed runs due at once, one
 * per following pass; skipping them leaves one late run, then the next one
 * half an interval away. Only counts are asserted, never durations. */
#define LATE_IV 40
static int late_runs;
static void late_periodic(tn_loop *l, void *arg) {
    (void)l;
    (void)arg;
    late_runs++;
    if (late_runs == 1) sleep_ms(LATE_IV * 7 / 2);
}

TEST(periodic_late_run_skips_missed_runs) {
    tn_loop *l = new_loop();
    tn_timer t;
    int i, after;
    late_runs = 0;
    CHECK_EQ_INT(tn_call_every(l, LATE_IV, late_periodic, NULL, &t), 0);
    step_until(l, &late_runs, 1, 10000); /* the first run blocks 3.5 intervals */
    REQUIRE(late_runs == 1);
    /* Passes that do not block: bunched catch-up would run it 3 times here
     * (the runs missed at 2, 3 and 4 intervals); skipping runs it once. */
    for (i = 0; i < 4; i++) CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    after = late_runs - 1;
    CHECK(after >= 1); /* the late run itself happens */
    CHECK(after <= 2); /* not the whole backlog */
    /* And it keeps going afterwards. */
    step_until(l, &late_runs, late_runs + 1, 10000);
    CHECK(late_runs >= after + 2);
    CHECK_EQ_INT(tn_cancel_timer(l, t), 0);
    FREE_LOOP_CLEAN(l);
}

/* ----------------------------------------------------------- fd handlers */
struct io_rec {
    int calls;
    unsigned last_events;
    int last_fd;
};
static void rec_io(tn_loop *l, int fd, unsigned events, void *arg) {
    struct io_rec *r = (struct io_rec *)arg;
    (void)l;
    r->calls++;
    r->last_events = events;
    r->last_fd = fd;
}

TEST(handler_read_readiness_level_triggered) {
    tn_loop *l = new_loop();
    struct io_rec r;
    int p[2];
    char buf[8];
    memset(&r, 0, sizeof r);
    REQUIRE(pipe(p) == 0);
    CHECK_EQ_INT(tn_add_handler(l, p[0], TN_READ, rec_io, &r), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 0); /* nothing to read */
    REQUIRE(write(p[1], "ab", 2) == 2);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 1);
    CHECK(r.last_events & TN_READ);
    CHECK(!(r.last_events & TN_WRITE));
    CHECK_EQ_INT(r.last_fd, p[0]);
    /* Level-triggered: still readable, so called again. */
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 2);
    CHECK_EQ_INT(read(p[0], buf, sizeof buf), 2);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 2);
    CHECK_EQ_INT(tn_remove_handler(l, p[0]), 0);
    close(p[0]);
    close(p[1]);
    FREE_LOOP_CLEAN(l);
}

TEST(handler_blocking_step_wakes_on_io) {
    tn_loop *l = new_loop();
    struct io_rec r;
    int p[2];
    memset(&r, 0, sizeof r);
    REQUIRE(pipe(p) == 0);
    CHECK_EQ_INT(tn_add_handler(l, p[0], TN_READ, rec_io, &r), 0);
    REQUIRE(write(p[1], "a", 1) == 1);
    CHECK_EQ_INT(tn_loop_step(l, -1), 0); /* ready now: does not block */
    CHECK_EQ_INT(r.calls, 1);
    CHECK_EQ_INT(tn_remove_handler(l, p[0]), 0);
    close(p[0]);
    close(p[1]);
    FREE_LOOP_CLEAN(l);
}

TEST(handler_hangup_is_delivered) {
    tn_loop *l = new_loop();
    struct io_rec r;
    int p[2];
    memset(&r, 0, sizeof r);
    REQUIRE(pipe(p) == 0);
    CHECK_EQ_INT(tn_add_handler(l, p[0], TN_READ, rec_io, &r), 0);
    close(p[1]); /* EOF / hang-up on the read end */
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 1);
    CHECK(r.last_events & (TN_READ | TN_ERROR));
    CHECK_EQ_INT(tn_remove_handler(l, p[0]), 0);
    close(p[0]);
    FREE_LOOP_CLEAN(l);
}

TEST(handler_write_readiness_and_update) {
    tn_loop *l = new_loop();
    struct io_rec r;
    int sv[2];
    char buf[8];
    memset(&r, 0, sizeof r);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK_EQ_INT(tn_add_handler(l, sv[0], TN_WRITE, rec_io, &r), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 1);
    CHECK(r.last_events & TN_WRITE);
    CHECK(!(r.last_events & TN_READ));
    /* Read interest only, nothing to read: no call although writable
     * (ioloop_test's test_read_while_writeable). */
    CHECK_EQ_INT(tn_update_handler(l, sv[0], TN_READ), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 1);
    REQUIRE(write(sv[1], "hi", 2) == 2);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 2);
    CHECK_EQ_INT(r.last_events & (TN_READ | TN_WRITE), TN_READ);
    /* Both. */
    CHECK_EQ_INT(tn_update_handler(l, sv[0], TN_READ | TN_WRITE), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 3);
    CHECK_EQ_INT(r.last_events & (TN_READ | TN_WRITE), TN_READ | TN_WRITE);
    /* The same interest again is fine. */
    CHECK_EQ_INT(tn_update_handler(l, sv[0], TN_READ | TN_WRITE), 0);
    /* No interest: silent although readable and writable. */
    CHECK_EQ_INT(tn_update_handler(l, sv[0], 0), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 3);
    CHECK_EQ_INT(tn_update_handler(l, sv[0], TN_READ), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 4);
    CHECK_EQ_INT(read(sv[0], buf, sizeof buf), 2);
    CHECK_EQ_INT(tn_update_handler(l, sv[0], 8u), TN_EINVAL);
    CHECK_EQ_INT(tn_remove_handler(l, sv[0]), 0);
    CHECK_EQ_INT(tn_update_handler(l, sv[0], TN_READ), TN_ENOENT);
    close(sv[0]);
    close(sv[1]);
    FREE_LOOP_CLEAN(l);
}

TEST(handler_add_zero_events_then_update) {
    tn_loop *l = new_loop();
    struct io_rec r;
    int sv[2];
    memset(&r, 0, sizeof r);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK_EQ_INT(tn_add_handler(l, sv[0], 0, rec_io, &r), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 0);
    CHECK_EQ_INT(tn_update_handler(l, sv[0], TN_WRITE), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 1);
    CHECK_EQ_INT(tn_remove_handler(l, sv[0]), 0);
    close(sv[0]);
    close(sv[1]);
    FREE_LOOP_CLEAN(l);
}

TEST(handler_remove_stops_delivery_and_errors) {
    tn_loop *l = new_loop();
    struct io_rec r;
    int p[2];
    tn_loop_stats st;
    memset(&r, 0, sizeof r);
    REQUIRE(pipe(p) == 0);
    CHECK_EQ_INT(tn_remove_handler(l, p[0]), TN_ENOENT); /* never added */
    CHECK_EQ_INT(tn_add_handler(l, p[0], TN_READ, rec_io, &r), 0);
    CHECK_EQ_INT(tn_add_handler(l, p[0], TN_READ, rec_io, &r), TN_EEXIST);
    CHECK_EQ_INT(tn_add_handler(l, p[0], TN_WRITE, rec_io, &r), TN_EEXIST);
    tn_loop_get_stats(l, &st);
    CHECK_EQ_INT(st.handlers, 1);
    CHECK_EQ_INT(tn_add_handler(l, -1, TN_READ, rec_io, &r), TN_EINVAL);
    CHECK_EQ_INT(tn_add_handler(l, p[1], TN_READ, NULL, &r), TN_EINVAL);
    CHECK_EQ_INT(tn_add_handler(l, p[1], 8u, rec_io, &r), TN_EINVAL);
    CHECK_EQ_INT(tn_remove_handler(l, -1), TN_ENOENT);
    CHECK_EQ_INT(tn_remove_handler(l, 100000), TN_ENOENT);
    REQUIRE(write(p[1], "a", 1) == 1);
    CHECK_EQ_INT(tn_remove_handler(l, p[0]), 0);
    CHECK_EQ_INT(tn_remove_handler(l, p[0]), TN_ENOENT);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 0);
    /* Re-adding after a remove works. */
    CHECK_EQ_INT(tn_add_handler(l, p[0], TN_READ, rec_io, &r), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 1);
    CHECK_EQ_INT(tn_remove_handler(l, p[0]), 0);
    close(p[0]);
    close(p[1]);
    FREE_LOOP_CLEAN(l);
}

TEST(handler_many_fds) {
    /* More fds than one batch of a small event buffer, all ready at once. */
    tn_loop *l = new_loop();
    enum { N = 100 };
    int p[N][2], i, n = 0, all = 1;
    struct io_rec r[N];
    memset(r, 0, sizeof r);
    for (i = 0; i < N; i++) {
        REQUIRE(pipe(p[i]) == 0);
        REQUIRE(write(p[i][1], "a", 1) == 1);
        CHECK_EQ_INT(tn_add_handler(l, p[i][0], TN_READ, rec_io, &r[i]), 0);
    }
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    for (i = 0; i < N; i++) {
        if (r[i].calls != 1) all = 0;
        if (r[i].last_fd != p[i][0]) all = 0;
        n += r[i].calls;
    }
    CHECK_EQ_INT(n, N);
    CHECK(all);
    for (i = 0; i < N; i++) {
        CHECK_EQ_INT(tn_remove_handler(l, p[i][0]), 0);
        close(p[i][0]);
        close(p[i][1]);
    }
    FREE_LOOP_CLEAN(l);
}

/* The key one. Two fds are ready in the same batch. Whichever callback runs
 * first removes and closes the other fd, then makes a new pipe whose read end
 * gets the very same fd number, and registers a new handler for it. The event
 * already collected for the old fd is stale: it must reach neither the old
 * handler nor the new one in this iteration. */
struct swap_ctx {
    int rd[2], wr[2]; /* the two original pipes */
    int swapped, victim, new_wr;
    int old_calls_after_swap, new_calls;
    int step; /* which step we are in */
    int new_calls_in_swap_step;
};
static struct swap_ctx sw;

static void new_handler(tn_loop *l, int fd, unsigned events, void *arg) {
    (void)l;
    (void)fd;
    (void)events;
    (void)arg;
    sw.new_calls++;
    if (sw.step == 1) sw.new_calls_in_swap_step++;
}

static void swap_handler(tn_loop *l, int fd, unsigned events, void *arg) {
    int p[2];
    (void)events;
    (void)arg;
    if (sw.swapped) {
        if (fd == sw.victim) sw.old_calls_after_swap++;
        return;
    }
    sw.swapped = 1;
    sw.victim = fd == sw.rd[0] ? sw.rd[1] : sw.rd[0];
    CHECK_EQ_INT(tn_remove_handler(l, sw.victim), 0);
    close(sw.victim);
    close(fd == sw.rd[0] ? sw.wr[1] : sw.wr[0]);
    REQUIRE(pipe(p) == 0);
    if (p[0] != sw.victim) { /* the lowest free number may be another one */
        REQUIRE(dup2(p[0], sw.victim) == sw.victim);
        close(p[0]);
    }
    sw.new_wr = p[1];
    /* Readable, so a wrongly delivered event would look plausible. */
    REQUIRE(write(sw.new_wr, "n", 1) == 1);
    CHECK_EQ_INT(tn_add_handler(l, sw.victim, TN_READ, new_handler, NULL), 0);
}

TEST(handler_stale_event_for_reused_fd_not_delivered) {
    tn_loop *l = new_loop();
    int a[2], b[2], first;
    memset(&sw, 0, sizeof sw);
    REQUIRE(pipe(a) == 0);
    REQUIRE(pipe(b) == 0);
    sw.rd[0] = a[0];
    sw.wr[0] = a[1];
    sw.rd[1] = b[0];
    sw.wr[1] = b[1];
    REQUIRE(write(a[1], "a", 1) == 1);
    REQUIRE(write(b[1], "b", 1) == 1);
    CHECK_EQ_INT(tn_add_handler(l, a[0], TN_READ, swap_handler, NULL), 0);
    CHECK_EQ_INT(tn_add_handler(l, b[0], TN_READ, swap_handler, NULL), 0);
    sw.step = 1;
    CHECK_EQ_INT(tn_loop_step(l, 0), 0); /* both are ready: one batch */
    REQUIRE(sw.swapped);
    CHECK_EQ_INT(sw.new_calls_in_swap_step, 0);
    CHECK_EQ_INT(sw.old_calls_after_swap, 0);
    /* The new registration is live from the next iteration on. */
    sw.step = 2;
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(sw.new_calls, 1);
    first = sw.victim == a[0] ? b[0] : a[0];
    CHECK_EQ_INT(tn_remove_handler(l, first), 0);
    CHECK_EQ_INT(tn_remove_handler(l, sw.victim), 0);
    close(first);
    close(first == a[0] ? a[1] : b[1]);
    close(sw.victim);
    close(sw.new_wr);
    FREE_LOOP_CLEAN(l);
}

/* ioloop_test's test_remove_handler_from_handler: two readable fds, the
 * first callback closes the other, whose callback must not run. */
static int rm_fds[2], rm_calls[2], rm_done;
static void rm_other(tn_loop *l, int fd, unsigned events, void *arg) {
    int me = (int)(intptr_t)arg, other = 1 - me;
    (void)fd;
    (void)events;
    rm_calls[me]++;
    if (!rm_done) {
        rm_done = 1;
        CHECK_EQ_INT(tn_remove_handler(l, rm_fds[other]), 0);
        close(rm_fds[other]);
        rm_fds[other] = -1;
    }
}

TEST(handler_removing_other_ready_fd) {
    tn_loop *l = new_loop();
    int s1[2], s2[2], i;
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, s1) == 0);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, s2) == 0);
    rm_fds[0] = s1[0];
    rm_fds[1] = s2[0];
    rm_calls[0] = rm_calls[1] = rm_done = 0;
    REQUIRE(write(s1[1], "a", 1) == 1);
    REQUIRE(write(s2[1], "b", 1) == 1);
    CHECK_EQ_INT(tn_add_handler(l, s1[0], TN_READ, rm_other, (void *)(intptr_t)0), 0);
    CHECK_EQ_INT(tn_add_handler(l, s2[0], TN_READ, rm_other, (void *)(intptr_t)1), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(rm_calls[0] + rm_calls[1], 1);
    for (i = 0; i < 2; i++)
        if (rm_fds[i] >= 0) {
            CHECK_EQ_INT(tn_remove_handler(l, rm_fds[i]), 0);
            close(rm_fds[i]);
        }
    close(s1[1]);
    close(s2[1]);
    FREE_LOOP_CLEAN(l);
}

/* A handler removes (and closes) its own fd while data is still pending. */
static int self_rm_calls;
static void self_remove(tn_loop *l, int fd, unsigned events, void *arg) {
    (void)events;
    (void)arg;
    self_rm_calls++;
    CHECK_EQ_INT(tn_remove_handler(l, fd), 0);
    close(fd);
}

TEST(handler_removes_own_fd_in_callback) {
    tn_loop *l = new_loop();
    int p[2], i;
    self_rm_calls = 0;
    REQUIRE(pipe(p) == 0);
    REQUIRE(write(p[1], "abc", 3) == 3);
    CHECK_EQ_INT(tn_add_handler(l, p[0], TN_READ, self_remove, NULL), 0);
    for (i = 0; i < 3; i++) CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(self_rm_calls, 1);
    close(p[1]);
    FREE_LOOP_CLEAN(l);
}

/* A handler swaps its own registration for another callback: the new one
 * starts on the next iteration, not in this one. */
static int swap_self_old, swap_self_new;
static void swap_self_new_cb(tn_loop *l, int fd, unsigned events, void *arg) {
    (void)l;
    (void)fd;
    (void)events;
    (void)arg;
    swap_self_new++;
}
static void swap_self_old_cb(tn_loop *l, int fd, unsigned events, void *arg) {
    (void)events;
    (void)arg;
    swap_self_old++;
    CHECK_EQ_INT(tn_remove_handler(l, fd), 0);
    CHECK_EQ_INT(tn_add_handler(l, fd, TN_READ, swap_self_new_cb, NULL), 0);
}

TEST(handler_reregisters_own_fd_in_callback) {
    tn_loop *l = new_loop();
    int p[2];
    swap_self_old = swap_self_new = 0;
    REQUIRE(pipe(p) == 0);
    REQUIRE(write(p[1], "a", 1) == 1);
    CHECK_EQ_INT(tn_add_handler(l, p[0], TN_READ, swap_self_old_cb, NULL), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(swap_self_old, 1);
    CHECK_EQ_INT(swap_self_new, 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(swap_self_old, 1);
    CHECK_EQ_INT(swap_self_new, 1);
    CHECK_EQ_INT(tn_remove_handler(l, p[0]), 0);
    close(p[0]);
    close(p[1]);
    FREE_LOOP_CLEAN(l);
}

TEST(loop_fd_signals_pending_io_for_embedding) {
    tn_loop *l = new_loop();
    struct io_rec r;
    struct pollfd pfd;
    int p[2], efd = tn_loop_fd(l);
    if (efd < 0) {
        CHECK(strcmp(tn_loop_backend(l), "poll") == 0);
        FREE_LOOP_CLEAN(l);
        return;
    }
    memset(&r, 0, sizeof r);
    REQUIRE(pipe(p) == 0);
    CHECK_EQ_INT(tn_add_handler(l, p[0], TN_READ, rec_io, &r), 0);
    pfd.fd = efd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    CHECK_EQ_INT(poll(&pfd, 1, 0), 0); /* nothing yet */
    REQUIRE(write(p[1], "a", 1) == 1);
    CHECK_EQ_INT(poll(&pfd, 1, 1000), 1); /* the outer poller would wake */
    CHECK(pfd.revents & POLLIN);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 1);
    CHECK_EQ_INT(tn_remove_handler(l, p[0]), 0);
    close(p[0]);
    close(p[1]);
    FREE_LOOP_CLEAN(l);
}

/* --------------------------------------------------------------- signals */
#ifndef TN_NO_SIGNALS
static int sig_calls, sig_seen, sig_in_raise;
static void on_sig(tn_loop *l, int signo, void *arg) {
    (void)l;
    sig_calls++;
    sig_seen = signo;
    CHECK(arg == (void *)&sig_calls);
    CHECK_EQ_INT(sig_in_raise, 0); /* from the loop, never inside raise() */
}
static volatile sig_atomic_t own_handler_calls;
static void own_handler(int signo) {
    (void)signo;
    own_handler_calls++;
}

TEST(signal_delivered_from_loop_and_remove_restores) {
    tn_loop *l = new_loop();
    struct sigaction sa, old;
    sigset_t cur;
    int i;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = own_handler;
    sigemptyset(&sa.sa_mask);
    REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
    own_handler_calls = 0;
    sig_calls = sig_seen = 0;

    CHECK_EQ_INT(tn_signal_add(l, SIGUSR1, on_sig, &sig_calls), 0);
    CHECK_EQ_INT(tn_signal_add(l, SIGUSR1, on_sig, &sig_calls), TN_EEXIST);
    CHECK_EQ_INT(tn_signal_add(l, SIGKILL, on_sig, NULL), TN_EINVAL);
    CHECK_EQ_INT(tn_signal_add(l, 0, on_sig, NULL), TN_EINVAL);
    CHECK_EQ_INT(tn_signal_add(l, SIGUSR2, NULL, NULL), TN_EINVAL);
    sig_in_raise = 1;
    CHECK_EQ_INT(raise(SIGUSR1), 0);
    sig_in_raise = 0;
    CHECK_EQ_INT(sig_calls, 0); /* not yet: it is a loop callback */
    CHECK_EQ_INT(own_handler_calls, 0);
    for (i = 0; i < 100 && sig_calls == 0; i++) CHECK_EQ_INT(tn_loop_step(l, 50), 0);
    CHECK_EQ_INT(sig_calls, 1);
    CHECK_EQ_INT(sig_seen, SIGUSR1);
    CHECK_EQ_INT(own_handler_calls, 0);

    /* Twice more: not a one-shot. */
    sig_in_raise = 1;
    CHECK_EQ_INT(raise(SIGUSR1), 0);
    sig_in_raise = 0;
    for (i = 0; i < 100 && sig_calls == 1; i++) CHECK_EQ_INT(tn_loop_step(l, 50), 0);
    CHECK_EQ_INT(sig_calls, 2);

    CHECK_EQ_INT(tn_signal_remove(l, SIGUSR1), 0);
    CHECK_EQ_INT(tn_signal_remove(l, SIGUSR1), TN_ENOENT);
    /* Restored: the previous disposition handles it, and it is not left
     * blocked in this thread. */
    REQUIRE(sigprocmask(SIG_BLOCK, NULL, &cur) == 0);
    CHECK(!sigismember(&cur, SIGUSR1));
    CHECK_EQ_INT(raise(SIGUSR1), 0);
    CHECK_EQ_INT(own_handler_calls, 1);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(sig_calls, 2);
    sigaction(SIGUSR1, &old, NULL);
    FREE_LOOP_CLEAN(l);
}

TEST(signal_two_signals_and_loop_free_restores) {
    tn_loop *l = new_loop();
    struct sigaction sa, old1, old2, now;
    int i;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = own_handler;
    sigemptyset(&sa.sa_mask);
    REQUIRE(sigaction(SIGUSR1, &sa, &old1) == 0);
    REQUIRE(sigaction(SIGUSR2, &sa, &old2) == 0);
    own_handler_calls = 0;
    sig_calls = sig_seen = 0;
    CHECK_EQ_INT(tn_signal_add(l, SIGUSR1, on_sig, &sig_calls), 0);
    CHECK_EQ_INT(tn_signal_add(l, SIGUSR2, on_sig, &sig_calls), 0);
    CHECK_EQ_INT(raise(SIGUSR2), 0);
    for (i = 0; i < 100 && sig_calls == 0; i++) CHECK_EQ_INT(tn_loop_step(l, 50), 0);
    CHECK_EQ_INT(sig_calls, 1);
    CHECK_EQ_INT(sig_seen, SIGUSR2);
    /* Remove one; the other still works. */
    CHECK_EQ_INT(tn_signal_remove(l, SIGUSR2), 0);
    CHECK_EQ_INT(raise(SIGUSR1), 0);
    for (i = 0; i < 100 && sig_calls == 1; i++) CHECK_EQ_INT(tn_loop_step(l, 50), 0);
    CHECK_EQ_INT(sig_calls, 2);
    CHECK_EQ_INT(sig_seen, SIGUSR1);
    CHECK_EQ_INT(own_handler_calls, 0);
    /* tn_loop_free restores what is still registered. */
    FREE_LOOP_CLEAN(l);
    CHECK_EQ_INT(raise(SIGUSR1), 0);
    CHECK_EQ_INT(own_handler_calls, 1);
    REQUIRE(sigaction(SIGUSR1, NULL, &now) == 0);
    CHECK(now.sa_handler == own_handler);
    sigaction(SIGUSR1, &old1, NULL);
    sigaction(SIGUSR2, &old2, NULL);
}
#endif /* TN_NO_SIGNALS */

/* A paused fd (no events) whose peer is gone delivers nothing: the loop
 * blocks instead of spinning on the hang-up; TN_ERROR alone hears it. */
TEST(handler_paused_fd_does_not_spin_on_hangup) {
    tn_loop *l = new_loop();
    struct io_rec r;
    int sv[2], i;
    memset(&r, 0, sizeof r);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK_EQ_INT(tn_add_handler(l, sv[0], TN_READ, rec_io, &r), 0);
    CHECK_EQ_INT(tn_update_handler(l, sv[0], 0), 0);
    close(sv[1]); /* the peer goes away: a hang-up on sv[0] */
    for (i = 0; i < 3; i++) CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 0);
    CHECK_EQ_INT(tn_update_handler(l, sv[0], TN_ERROR), 0);
    CHECK_EQ_INT(tn_loop_step(l, 1000), 0);
    CHECK_EQ_INT(r.calls, 1);
    CHECK(r.last_events & TN_ERROR);
    CHECK_EQ_INT(r.last_events & (TN_READ | TN_WRITE), 0);
    CHECK_EQ_INT(tn_remove_handler(l, sv[0]), 0);
    close(sv[0]);
    FREE_LOOP_CLEAN(l);
}

/* Two fds ready in the same batch; whichever callback runs first pauses
 * the other (or turns its reading off): the other's event, collected
 * already, must not be delivered. */
static int pause_calls[2], pause_fds[2];
static unsigned pause_mode; /* what the first callback leaves the other with */
static void pause_other(tn_loop *l, int fd, unsigned events, void *arg) {
    int me = (int)(intptr_t)arg;
    (void)events;
    (void)fd;
    pause_calls[me]++;
    CHECK_EQ_INT(tn_update_handler(l, pause_fds[1 - me], pause_mode), 0);
}
TEST(handler_paused_in_the_same_batch_gets_no_stale_event) {
    unsigned modes[2] = {0, TN_WRITE};
    int m;
    for (m = 0; m < 2; m++) {
        tn_loop *l = new_loop();
        int a[2], b[2], i;
        REQUIRE(pipe(a) == 0 && pipe(b) == 0);
        pause_fds[0] = a[0];
        pause_fds[1] = b[0];
        pause_calls[0] = pause_calls[1] = 0;
        pause_mode = modes[m]; /* paused; or asking for writes only, which a pipe's read end never has */
        CHECK_EQ_INT(tn_add_handler(l, a[0], TN_READ, pause_other, (void *)(intptr_t)0), 0);
        CHECK_EQ_INT(tn_add_handler(l, b[0], TN_READ, pause_other, (void *)(intptr_t)1), 0);
        REQUIRE(write(a[1], "x", 1) == 1 && write(b[1], "y", 1) == 1);
        for (i = 0; i < 3; i++) CHECK_EQ_INT(tn_loop_step(l, 0), 0);
        /* The first stays readable and runs each step; the other never. */
        CHECK((pause_calls[0] == 0) != (pause_calls[1] == 0));
        CHECK_EQ_INT(tn_remove_handler(l, a[0]), 0);
        CHECK_EQ_INT(tn_remove_handler(l, b[0]), 0);
        close(a[0]);
        close(a[1]);
        close(b[0]);
        close(b[1]);
        FREE_LOOP_CLEAN(l);
    }
}

/* A signal whose disposition cannot be set (glibc reserves 32 and 33 for
 * its threads: sigaction refuses them) fails cleanly and leaves no trace:
 * the loop did not become the process's signal owner (another loop could
 * then never own signals: TN_EEXIST). The poll backend's concern: epoll's
 * signalfd takes those numbers. */
#if defined(TN_BACKEND_POLL) && !defined(TN_NO_SIGNALS)
static void sig_noop(tn_loop *l, int signo, void *arg) {
    (void)l;
    (void)signo;
    (void)arg;
}
TEST(signal_add_that_fails_leaves_no_owner) {
    tn_loop *a = new_loop(), *b = new_loop();
    struct sigaction probe;
    int bad = 32;
    if (sigaction(bad, NULL, &probe) == 0 && sigaction(bad, &probe, NULL) == 0) bad = 33;
    CHECK(tn_signal_add(a, bad, sig_noop, NULL) < 0);
    CHECK_EQ_INT(tn_signal_remove(a, bad), TN_ENOENT);
    CHECK_EQ_INT(tn_signal_add(b, SIGUSR1, sig_noop, NULL), 0);
    CHECK_EQ_INT(tn_signal_remove(b, SIGUSR1), 0);
    FREE_LOOP_CLEAN(a);
    FREE_LOOP_CLEAN(b);
}
#endif
