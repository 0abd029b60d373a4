/* Futures and their combinators: done callbacks, cancellation, ownership of
 * values, tn_all / tn_any / tn_with_timeout / tn_sleep / tn_run_sync.
 * Ports what tornado/test/concurrent_test.py and gen_test.py check about
 * futures, multi and with_timeout. Every test ends with nothing left: no
 * future, timer or coroutine still tracked by the loop. */
#include "../tornado.h"
#include "tn_test.h"

#include <errno.h>
#include <time.h>

static size_t live_futures(tn_loop *l) {
    tn_loop_stats st;
    tn_loop_get_stats(l, &st);
    return st.futures;
}

static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

/* Owned values: a counting free function proves who frees what. */
static int frees;
static void count_free(void *p) {
    frees++;
    free(p);
}
static int *new_int(int v) {
    int *p = (int *)malloc(sizeof *p);
    REQUIRE(p != NULL);
    *p = v;
    return p;
}

/* A done callback that records and ends the consumer's part. */
struct done_rec {
    int calls, err;
    void *value;
};
static void rec_done(tn_future *f, void *arg) {
    struct done_rec *r = (struct done_rec *)arg;
    r->calls++;
    r->err = tn_future_error(f);
    r->value = tn_future_value(f);
    tn_future_release(f);
}

/* A producer's cancel hook that counts and ends the producer's part, as a
 * real producer stopping its work would. */
static int cancel_hooks;
static void hook_fail(tn_future *f, void *arg) {
    (void)arg;
    cancel_hooks++;
    tn_future_fail(f, TN_ECANCELLED);
}
/* One that only counts: the producer resolves later on its own. */
static void hook_count(tn_future *f, void *arg) {
    (void)f;
    (void)arg;
    cancel_hooks++;
}

/* Callbacks and timers that produce. */
static void cb_resolve(tn_loop *l, void *arg) {
    (void)l;
    CHECK_EQ_INT(tn_future_resolve((tn_future *)arg, (void *)&frees), 0);
}
static void cb_fail_eio(tn_loop *l, void *arg) {
    (void)l;
    CHECK_EQ_INT(tn_future_fail((tn_future *)arg, -EIO), 0);
}

static void run_steps(tn_loop *l, int n) {
    int i;
    for (i = 0; i < n; i++) CHECK_EQ_INT(tn_loop_step(l, 0), 0);
}

/* ---------------------------------------------------------- basics */
TEST(future_pending_state) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    REQUIRE(f != NULL);
    CHECK_EQ_INT(live_futures(l), 1);
    CHECK(!tn_future_done(f));
    CHECK_EQ_INT(tn_future_error(f), TN_ESTATE);
    CHECK(tn_future_value(f) == NULL);
    CHECK(tn_future_take(f) == NULL);
    CHECK_EQ_INT(tn_future_resolve(f, NULL), 0);
    tn_future_release(f);
    tn_future_release(NULL); /* harmless */
    FREE_LOOP_CLEAN(l);
}

TEST(future_done_callback_never_inside_resolve) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    struct done_rec r;
    int x = 7;
    memset(&r, 0, sizeof r);
    CHECK_EQ_INT(tn_future_on_done(f, rec_done, &r), 0);
    CHECK_EQ_INT(tn_future_resolve(f, &x), 0);
    CHECK_EQ_INT(r.calls, 0); /* not inside resolve */
    CHECK(tn_future_done(f));
    CHECK_EQ_INT(tn_future_error(f), 0);
    CHECK(tn_future_value(f) == &x);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 1);
    CHECK_EQ_INT(r.err, 0);
    CHECK(r.value == &x);
    run_steps(l, 2);
    CHECK_EQ_INT(r.calls, 1); /* exactly once */
    FREE_LOOP_CLEAN(l);
}

TEST(future_on_done_after_resolution_runs_later) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    struct done_rec r;
    memset(&r, 0, sizeof r);
    CHECK_EQ_INT(tn_future_fail(f, -EIO), 0);
    CHECK_EQ_INT(tn_future_on_done(f, rec_done, &r), 0);
    CHECK_EQ_INT(r.calls, 0); /* not inside on_done either */
    CHECK_EQ_INT(tn_future_on_done(f, rec_done, &r), TN_EEXIST);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 1);
    CHECK_EQ_INT(r.err, -EIO);
    CHECK(r.value == NULL);
    FREE_LOOP_CLEAN(l);
}

TEST(future_on_done_twice_is_eexist) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    struct done_rec r, r2;
    memset(&r, 0, sizeof r);
    memset(&r2, 0, sizeof r2);
    CHECK_EQ_INT(tn_future_on_done(f, rec_done, &r), 0);
    CHECK_EQ_INT(tn_future_on_done(f, rec_done, &r2), TN_EEXIST);
    CHECK_EQ_INT(tn_future_resolve(f, NULL), 0);
    run_steps(l, 2);
    CHECK_EQ_INT(r.calls, 1);
    CHECK_EQ_INT(r2.calls, 0);
    FREE_LOOP_CLEAN(l);
}

TEST(future_fail_and_double_completion) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    CHECK_EQ_INT(tn_future_fail(f, -ECONNRESET), 0);
    CHECK(tn_future_done(f));
    CHECK_EQ_INT(tn_future_error(f), -ECONNRESET);
    CHECK(tn_future_take(f) == NULL);
    /* The producer's part has ended: a second completion is refused and
     * changes nothing. */
    CHECK_EQ_INT(tn_future_resolve(f, NULL), TN_ESTATE);
    CHECK_EQ_INT(tn_future_fail(f, -EIO), TN_ESTATE);
    CHECK_EQ_INT(tn_future_error(f), -ECONNRESET);
    tn_future_release(f);
    FREE_LOOP_CLEAN(l);
}

TEST(future_release_frees_untaken_owned_value) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    int *a = new_int(1);
    frees = 0;
    CHECK_EQ_INT(tn_future_resolve_owned(f, a, count_free), 0);
    CHECK_EQ_INT(tn_future_error(f), 0);
    CHECK(tn_future_value(f) == a);
    CHECK_EQ_INT(*(int *)tn_future_value(f), 1);
    tn_future_release(f); /* untaken owned value: freed with the future */
    CHECK_EQ_INT(frees, 1);
    FREE_LOOP_CLEAN(l);
}

/* ---------------------------------------------------------- cancellation */
TEST(future_cancel_tells_producer_and_fails_with_ecancelled) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    struct done_rec r;
    memset(&r, 0, sizeof r);
    cancel_hooks = 0;
    tn_future_on_cancel(f, hook_count, NULL);
    CHECK_EQ_INT(tn_future_on_done(f, rec_done, &r), 0);
    CHECK_EQ_INT(tn_future_cancel(f), 0);
    CHECK_EQ_INT(cancel_hooks, 1); /* synchronously */
    CHECK(tn_future_done(f));
    CHECK_EQ_INT(tn_future_error(f), TN_ECANCELLED);
    CHECK_EQ_INT(r.calls, 0); /* the consumer hears of it later */
    CHECK_EQ_INT(tn_future_cancel(f), TN_ESTATE);
    CHECK_EQ_INT(cancel_hooks, 1); /* once */
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(r.calls, 1);
    CHECK_EQ_INT(r.err, TN_ECANCELLED);
    /* The producer still holds its part until it completes. */
    CHECK_EQ_INT(live_futures(l), 1);
    CHECK_EQ_INT(tn_future_resolve(f, NULL), TN_ECANCELLED);
    FREE_LOOP_CLEAN(l);
}

TEST(future_cancel_hook_may_complete_synchronously) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    cancel_hooks = 0;
    tn_future_on_cancel(f, hook_fail, NULL);
    CHECK_EQ_INT(tn_future_cancel(f), 0);
    CHECK_EQ_INT(cancel_hooks, 1);
    CHECK_EQ_INT(tn_future_error(f), TN_ECANCELLED);
    tn_future_release(f);
    FREE_LOOP_CLEAN(l);
}

TEST(future_cancel_of_done_future_is_estate) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    cancel_hooks = 0;
    tn_future_on_cancel(f, hook_count, NULL);
    CHECK_EQ_INT(tn_future_resolve(f, &frees), 0);
    CHECK_EQ_INT(tn_future_cancel(f), TN_ESTATE);
    CHECK_EQ_INT(cancel_hooks, 0);
    CHECK_EQ_INT(tn_future_error(f), 0);
    CHECK(tn_future_value(f) == &frees);
    tn_future_release(f);
    FREE_LOOP_CLEAN(l);
}

TEST(future_resolve_after_cancel_frees_owned_value) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    frees = 0;
    CHECK_EQ_INT(tn_future_cancel(f), 0);
    CHECK_EQ_INT(tn_future_resolve_owned(f, new_int(5), count_free), TN_ECANCELLED);
    CHECK_EQ_INT(frees, 1); /* at once: nobody can ever read it */
    CHECK_EQ_INT(tn_future_error(f), TN_ECANCELLED);
    CHECK(tn_future_value(f) == NULL);
    tn_future_release(f);
    CHECK_EQ_INT(frees, 1);
    FREE_LOOP_CLEAN(l);
}

TEST(future_fail_after_cancel_is_ecancelled) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    CHECK_EQ_INT(tn_future_cancel(f), 0);
    tn_future_release(f); /* consumer gone first this time */
    CHECK_EQ_INT(live_futures(l), 1);
    CHECK_EQ_INT(tn_future_fail(f, -EIO), TN_ECANCELLED); /* and this frees it */
    FREE_LOOP_CLEAN(l);
}

/* ------------------------------------------------------------- ownership */
TEST(future_release_before_resolve_frees_after_resolve) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    frees = 0;
    tn_future_release(f);
    CHECK_EQ_INT(live_futures(l), 1); /* the producer still holds it */
    CHECK_EQ_INT(tn_future_resolve_owned(f, new_int(1), count_free), 0);
    CHECK_EQ_INT(live_futures(l), 0);
    CHECK_EQ_INT(frees, 1); /* nobody took the value */
    FREE_LOOP_CLEAN(l);
}

TEST(future_release_with_done_callback_pending) {
    /* The consumer lets go after the result is in but before its done
     * callback ran: the callback is not called and nothing leaks. */
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    struct done_rec r;
    memset(&r, 0, sizeof r);
    frees = 0;
    CHECK_EQ_INT(tn_future_on_done(f, rec_done, &r), 0);
    CHECK_EQ_INT(tn_future_resolve_owned(f, new_int(2), count_free), 0);
    tn_future_release(f);
    run_steps(l, 2);
    CHECK_EQ_INT(r.calls, 0);
    CHECK_EQ_INT(frees, 1);
    FREE_LOOP_CLEAN(l);
}

TEST(future_take_transfers_ownership) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    int *v = new_int(42), *got;
    frees = 0;
    CHECK_EQ_INT(tn_future_resolve_owned(f, v, count_free), 0);
    CHECK(tn_future_value(f) == v); /* borrowed */
    got = (int *)tn_future_take(f);
    CHECK(got == v);
    CHECK(tn_future_take(f) == NULL); /* only once */
    CHECK(tn_future_value(f) == NULL);
    tn_future_release(f);
    CHECK_EQ_INT(frees, 0); /* not the future's any more */
    CHECK_EQ_INT(live_futures(l), 0);
    CHECK_EQ_INT(*got, 42);
    count_free(got);
    FREE_LOOP_CLEAN(l);
}

TEST(future_loop_free_with_resolved_unconsumed_callback) {
    /* A done callback still queued at tn_loop_free: the future was released
     * by both sides except the queued dispatch; free must not leak it. */
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    struct done_rec r;
    memset(&r, 0, sizeof r);
    frees = 0;
    CHECK_EQ_INT(tn_future_on_done(f, rec_done, &r), 0);
    CHECK_EQ_INT(tn_future_resolve_owned(f, new_int(3), count_free), 0);
    tn_future_release(f);
    tn_loop_free(l);
    CHECK_EQ_INT(r.calls, 0);
    CHECK_EQ_INT(frees, 1);
}

/* -------------------------------------------------------------- tn_all */
TEST(all_values_in_input_order) {
    tn_loop *l = new_loop();
    tn_future *fs[3], *all;
    void *values[3] = {NULL, NULL, NULL};
    int *v[3], i;
    frees = 0;
    for (i = 0; i < 3; i++) {
        fs[i] = tn_future_new(l);
        v[i] = new_int(i * 10);
    }
    all = tn_all(l, fs, 3, values);
    REQUIRE(all != NULL);
    /* Resolved in reverse order: values still come in input order. */
    CHECK_EQ_INT(tn_future_resolve_owned(fs[2], v[2], count_free), 0);
    CHECK_EQ_INT(tn_future_resolve_owned(fs[1], v[1], count_free), 0);
    run_steps(l, 2);
    CHECK(!tn_future_done(all));
    CHECK_EQ_INT(tn_future_resolve_owned(fs[0], v[0], count_free), 0);
    CHECK_EQ_INT(tn_run_sync(l, all, 1000, NULL), 0);
    for (i = 0; i < 3; i++) {
        CHECK(values[i] == v[i]);
        if (values[i]) CHECK_EQ_INT(*(int *)values[i], i * 10);
    }
    run_steps(l, 2);
    CHECK_EQ_INT(frees, 0); /* the values are ours now */
    for (i = 0; i < 3; i++) count_free(values[i]);
    FREE_LOOP_CLEAN(l);
}

TEST(all_with_timers_and_done_inputs) {
    tn_loop *l = new_loop();
    tn_future *fs[3], *all;
    void *values[3];
    int i;
    fs[0] = tn_future_new(l);
    CHECK_EQ_INT(tn_future_resolve(fs[0], &values[0]), 0); /* already done */
    fs[1] = tn_sleep(l, 3);
    fs[2] = tn_future_new(l);
    CHECK_EQ_INT(tn_call_later(l, 1, cb_resolve, fs[2], NULL), 0);
    for (i = 0; i < 3; i++) values[i] = (void *)&i;
    all = tn_all(l, fs, 3, values);
    CHECK_EQ_INT(tn_run_sync(l, all, 0, NULL), 0);
    CHECK(values[0] == &values[0]);
    CHECK(values[1] == NULL); /* sleep resolves with NULL */
    CHECK(values[2] == &frees);
    run_steps(l, 2);
    FREE_LOOP_CLEAN(l);
}

TEST(all_values_may_be_null) {
    tn_loop *l = new_loop();
    tn_future *fs[2];
    frees = 0;
    fs[0] = tn_future_new(l);
    fs[1] = tn_future_new(l);
    CHECK_EQ_INT(tn_future_resolve_owned(fs[0], new_int(1), count_free), 0);
    CHECK_EQ_INT(tn_future_resolve_owned(fs[1], new_int(2), count_free), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, 2, NULL), 0, NULL), 0);
    run_steps(l, 2);
    CHECK_EQ_INT(frees, 2); /* nobody took them: freed, not leaked */
    FREE_LOOP_CLEAN(l);
}

TEST(all_fails_on_first_failure_and_cancels_others) {
    tn_loop *l = new_loop();
    tn_future *fs[3], *all;
    void *values[3] = {&frees, &frees, &frees};
    int i, rc;
    cancel_hooks = 0;
    for (i = 0; i < 3; i++) {
        fs[i] = tn_future_new(l);
        tn_future_on_cancel(fs[i], hook_fail, NULL);
    }
    all = tn_all(l, fs, 3, values);
    CHECK_EQ_INT(tn_call_later(l, 1, cb_fail_eio, fs[1], NULL), 0);
    rc = tn_run_sync(l, all, 0, NULL);
    CHECK_EQ_INT(rc, -EIO);
    CHECK_EQ_INT(cancel_hooks, 2); /* fs[0] and fs[2] */
    for (i = 0; i < 3; i++) CHECK(values[i] == &frees); /* untouched */
    run_steps(l, 3);
    FREE_LOOP_CLEAN(l);
}

TEST(all_failure_cancels_producers_that_finish_later) {
    /* The others' producers ignore the cancel hook and resolve later: they
     * hear TN_ECANCELLED and their owned values are freed. */
    tn_loop *l = new_loop();
    tn_future *fs[3];
    int i;
    frees = 0;
    cancel_hooks = 0;
    for (i = 0; i < 3; i++) {
        fs[i] = tn_future_new(l);
        tn_future_on_cancel(fs[i], hook_count, NULL);
    }
    CHECK_EQ_INT(tn_future_fail(fs[0], -EPIPE), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, 3, NULL), 0, NULL), -EPIPE);
    CHECK_EQ_INT(cancel_hooks, 2);
    CHECK_EQ_INT(tn_future_resolve_owned(fs[1], new_int(1), count_free), TN_ECANCELLED);
    CHECK_EQ_INT(tn_future_resolve_owned(fs[2], new_int(2), count_free), TN_ECANCELLED);
    CHECK_EQ_INT(frees, 2);
    run_steps(l, 3);
    FREE_LOOP_CLEAN(l);
}

TEST(all_of_nothing_resolves) {
    tn_loop *l = new_loop();
    tn_future *all = tn_all(l, NULL, 0, NULL);
    REQUIRE(all != NULL);
    CHECK_EQ_INT(tn_run_sync(l, all, 1000, NULL), 0);
    FREE_LOOP_CLEAN(l);
}

TEST(all_cancelled_output_cancels_inputs) {
    tn_loop *l = new_loop();
    tn_future *fs[2], *all;
    struct done_rec r;
    memset(&r, 0, sizeof r);
    cancel_hooks = 0;
    fs[0] = tn_future_new(l);
    fs[1] = tn_sleep(l, 60000);
    tn_future_on_cancel(fs[0], hook_fail, NULL);
    all = tn_all(l, fs, 2, NULL);
    CHECK_EQ_INT(tn_future_on_done(all, rec_done, &r), 0);
    CHECK_EQ_INT(tn_future_cancel(all), 0);
    CHECK_EQ_INT(cancel_hooks, 1);
    run_steps(l, 3);
    CHECK_EQ_INT(r.calls, 1);
    CHECK_EQ_INT(r.err, TN_ECANCELLED);
    FREE_LOOP_CLEAN(l); /* the sleep's timer is gone too */
}

/* -------------------------------------------------------------- tn_any */
TEST(any_first_wins_with_index_others_cancelled) {
    tn_loop *l = new_loop();
    tn_future *fs[3], *any;
    size_t idx = 99;
    void *v = NULL;
    int i;
    cancel_hooks = 0;
    frees = 0;
    for (i = 0; i < 3; i++) {
        fs[i] = tn_future_new(l);
        tn_future_on_cancel(fs[i], hook_fail, NULL);
    }
    any = tn_any(l, fs, 3, &idx);
    CHECK_EQ_INT(tn_future_resolve_owned(fs[2], new_int(77), count_free), 0);
    CHECK_EQ_INT(tn_run_sync(l, any, 1000, &v), 0);
    CHECK_EQ_INT(idx, 2);
    REQUIRE(v != NULL);
    CHECK_EQ_INT(*(int *)v, 77);
    CHECK_EQ_INT(cancel_hooks, 2);
    run_steps(l, 3);
    CHECK_EQ_INT(frees, 0); /* the winner's value was handed over */
    count_free(v);
    FREE_LOOP_CLEAN(l);
}

TEST(any_first_to_complete_by_time) {
    tn_loop *l = new_loop();
    tn_future *fs[3];
    size_t idx = 99;
    fs[0] = tn_sleep(l, 60000);
    fs[1] = tn_future_new(l);
    fs[2] = tn_sleep(l, 60000);
    CHECK_EQ_INT(tn_call_later(l, 2, cb_resolve, fs[1], NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_any(l, fs, 3, &idx), 0, NULL), 0);
    CHECK_EQ_INT(idx, 1);
    run_steps(l, 3);
    FREE_LOOP_CLEAN(l); /* the losing sleeps' timers were cancelled */
}

TEST(any_failure_wins_if_first) {
    tn_loop *l = new_loop();
    tn_future *fs[2];
    size_t idx = 99;
    fs[0] = tn_sleep(l, 60000);
    fs[1] = tn_future_new(l);
    CHECK_EQ_INT(tn_call_later(l, 1, cb_fail_eio, fs[1], NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_any(l, fs, 2, &idx), 0, NULL), -EIO);
    CHECK_EQ_INT(idx, 1);
    run_steps(l, 3);
    FREE_LOOP_CLEAN(l);
}

TEST(any_index_may_be_null) {
    tn_loop *l = new_loop();
    tn_future *fs[2];
    fs[0] = tn_future_new(l);
    fs[1] = tn_sleep(l, 60000);
    CHECK_EQ_INT(tn_future_resolve(fs[0], NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_any(l, fs, 2, NULL), 0, NULL), 0);
    run_steps(l, 3);
    FREE_LOOP_CLEAN(l);
}

/* -------------------------------------------------------- tn_with_timeout */
TEST(with_timeout_times_out_and_cancels_inner) {
    tn_loop *l = new_loop();
    tn_future *in = tn_future_new(l), *out;
    cancel_hooks = 0;
    tn_future_on_cancel(in, hook_count, NULL);
    out = tn_with_timeout(l, in, 5);
    REQUIRE(out != NULL);
    CHECK_EQ_INT(tn_run_sync(l, out, 0, NULL), TN_ETIMEOUT);
    CHECK_EQ_INT(cancel_hooks, 1); /* the producer was told */
    run_steps(l, 2);
    frees = 0;
    CHECK_EQ_INT(tn_future_resolve_owned(in, new_int(1), count_free), TN_ECANCELLED);
    CHECK_EQ_INT(frees, 1);
    FREE_LOOP_CLEAN(l);
}

TEST(with_timeout_completes_when_inner_is_fast) {
    tn_loop *l = new_loop();
    tn_future *in = tn_future_new(l);
    void *v = NULL;
    CHECK_EQ_INT(tn_call_later(l, 1, cb_resolve, in, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_with_timeout(l, in, 60000), 0, &v), 0);
    CHECK(v == &frees);
    run_steps(l, 2);
    FREE_LOOP_CLEAN(l); /* its timer was cancelled */
}

TEST(with_timeout_passes_owned_value_through) {
    tn_loop *l = new_loop();
    tn_future *in = tn_future_new(l), *out;
    frees = 0;
    out = tn_with_timeout(l, in, 60000);
    CHECK_EQ_INT(tn_future_resolve_owned(in, new_int(9), count_free), 0);
    /* Not taken: the output frees it with the inner's free function. */
    while (!tn_future_done(out)) CHECK_EQ_INT(tn_loop_step(l, 100), 0);
    CHECK_EQ_INT(*(int *)tn_future_value(out), 9);
    tn_future_release(out);
    run_steps(l, 2);
    CHECK_EQ_INT(frees, 1);
    FREE_LOOP_CLEAN(l);
}

TEST(with_timeout_inner_fails_before_timeout) {
    tn_loop *l = new_loop();
    tn_future *in = tn_future_new(l);
    CHECK_EQ_INT(tn_call_later(l, 1, cb_fail_eio, in, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_with_timeout(l, in, 60000), 0, NULL), -EIO);
    run_steps(l, 2);
    FREE_LOOP_CLEAN(l);
}

TEST(with_timeout_inner_already_done) {
    tn_loop *l = new_loop();
    tn_future *in = tn_future_new(l);
    void *v = NULL;
    CHECK_EQ_INT(tn_future_resolve(in, &frees), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_with_timeout(l, in, 0), 0, &v), 0);
    CHECK(v == &frees);
    run_steps(l, 2);
    FREE_LOOP_CLEAN(l);
}

TEST(with_timeout_cancelled_output_cancels_inner) {
    tn_loop *l = new_loop();
    tn_future *in = tn_future_new(l), *out;
    cancel_hooks = 0;
    tn_future_on_cancel(in, hook_fail, NULL);
    out = tn_with_timeout(l, in, 60000);
    CHECK_EQ_INT(tn_future_cancel(out), 0);
    CHECK_EQ_INT(cancel_hooks, 1);
    CHECK_EQ_INT(tn_future_error(out), TN_ECANCELLED);
    tn_future_release(out);
    run_steps(l, 2);
    FREE_LOOP_CLEAN(l);
}

/* The inner completes in the same iteration as the timeout fires, but
 * first: its result must not be thrown away as a timeout. */
TEST(with_timeout_inner_done_just_before_timer_wins) {
    tn_loop *l = new_loop();
    tn_future *in = tn_future_new(l), *out;
    void *v = NULL;
    int rc;
    frees = 0;
    out = tn_with_timeout(l, in, 0); /* its timer is due at once */
    /* Callbacks run before timers in an iteration: this resolves `in`
     * before the timeout's timer fires, in that same iteration. */
    CHECK_EQ_INT(tn_add_callback(l, cb_resolve, in), 0);
    rc = tn_run_sync(l, out, 0, &v);
    CHECK_EQ_INT(rc, 0);
    CHECK(v == &frees);
    run_steps(l, 2);
    FREE_LOOP_CLEAN(l);
}

/* ------------------------------------------------------------- tn_sleep */
TEST(sleep_resolves_after_delay) {
    tn_loop *l = new_loop();
    uint64_t t0 = tn_time_ms(l);
    void *v = &frees;
    CHECK_EQ_INT(tn_run_sync(l, tn_sleep(l, 5), 0, &v), 0);
    CHECK(v == NULL);
    CHECK(tn_time_ms(l) >= t0 + 5);
    FREE_LOOP_CLEAN(l);
}

TEST(sleep_zero_resolves_on_next_iteration) {
    tn_loop *l = new_loop();
    tn_future *s = tn_sleep(l, 0);
    CHECK(!tn_future_done(s));
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK(tn_future_done(s));
    CHECK_EQ_INT(tn_future_error(s), 0);
    tn_future_release(s);
    FREE_LOOP_CLEAN(l);
}

TEST(sleep_cancel_cancels_timer) {
    tn_loop *l = new_loop();
    tn_future *s = tn_sleep(l, 60000);
    tn_loop_stats st;
    tn_loop_get_stats(l, &st);
    CHECK_EQ_INT(st.timers, 1);
    CHECK_EQ_INT(tn_future_cancel(s), 0);
    tn_loop_get_stats(l, &st);
    CHECK_EQ_INT(st.timers, 0);
    CHECK_EQ_INT(tn_future_error(s), TN_ECANCELLED);
    tn_future_release(s);
    run_steps(l, 1);
    CHECK_EQ_INT(tn_loop_next_timeout(l), -1);
    FREE_LOOP_CLEAN(l);
}

TEST(sleep_released_still_fires_and_frees) {
    tn_loop *l = new_loop();
    tn_future *s = tn_sleep(l, 1);
    tn_future_release(s);
    CHECK_EQ_INT(live_futures(l), 1);
    while (live_futures(l)) CHECK_EQ_INT(tn_loop_step(l, 100), 0);
    CHECK_EQ_INT(live_futures(l), 0);
    FREE_LOOP_CLEAN(l);
}

/* ----------------------------------------------------------- tn_run_sync */
TEST(run_sync_with_value) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    void *v = NULL;
    CHECK_EQ_INT(tn_add_callback(l, cb_resolve, f), 0);
    CHECK_EQ_INT(tn_run_sync(l, f, 0, &v), 0);
    CHECK(v == &frees);
    FREE_LOOP_CLEAN(l);
}

TEST(run_sync_owned_value_is_handed_over_or_freed) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    void *v = NULL;
    frees = 0;
    CHECK_EQ_INT(tn_future_resolve_owned(f, new_int(4), count_free), 0);
    CHECK_EQ_INT(tn_run_sync(l, f, 0, &v), 0);
    REQUIRE(v != NULL);
    CHECK_EQ_INT(frees, 0);
    count_free(v);
    f = tn_future_new(l);
    CHECK_EQ_INT(tn_future_resolve_owned(f, new_int(5), count_free), 0);
    CHECK_EQ_INT(tn_run_sync(l, f, 0, NULL), 0); /* value not wanted */
    CHECK_EQ_INT(frees, 2);
    FREE_LOOP_CLEAN(l);
}

TEST(run_sync_error) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    void *v = &frees;
    CHECK_EQ_INT(tn_call_later(l, 1, cb_fail_eio, f, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, f, 0, &v), -EIO);
    CHECK(v == NULL);
    FREE_LOOP_CLEAN(l);
}

TEST(run_sync_timeout_cancels) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    void *v = &frees;
    cancel_hooks = 0;
    tn_future_on_cancel(f, hook_fail, NULL);
    CHECK_EQ_INT(tn_run_sync(l, f, 5, &v), TN_ETIMEOUT);
    CHECK_EQ_INT(cancel_hooks, 1);
    CHECK(v == NULL);
    run_steps(l, 1);
    FREE_LOOP_CLEAN(l);
}

TEST(run_sync_timeout_of_sleep) {
    tn_loop *l = new_loop();
    CHECK_EQ_INT(tn_run_sync(l, tn_sleep(l, 60000), 5, NULL), TN_ETIMEOUT);
    run_steps(l, 1);
    FREE_LOOP_CLEAN(l);
}

TEST(run_sync_null_and_done) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    CHECK_EQ_INT(tn_run_sync(l, NULL, 0, NULL), TN_ENOMEM);
    CHECK_EQ_INT(tn_future_fail(f, -ENOENT), 0);
    CHECK_EQ_INT(tn_run_sync(l, f, 0, NULL), -ENOENT);
    FREE_LOOP_CLEAN(l);
}

/* The timeout counts from the call, not from the loop's last iteration:
 * a loop left idle for a while must not make run_sync give up before it
 * has run anything. */
TEST(run_sync_timeout_counts_from_the_call) {
    tn_loop *l = new_loop();
    tn_future *f = tn_future_new(l);
    void *v = NULL;
    sleep_ms(60); /* the loop's cached clock is now 60 ms old */
    CHECK_EQ_INT(tn_add_callback(l, cb_resolve, f), 0);
    CHECK_EQ_INT(tn_run_sync(l, f, 30, &v), 0);
    CHECK(v == &frees);
    run_steps(l, 1);
    FREE_LOOP_CLEAN(l);
}

TEST(run_sync_can_be_repeated) {
    tn_loop *l = new_loop();
    int i;
    for (i = 0; i < 3; i++) CHECK_EQ_INT(tn_run_sync(l, tn_sleep(l, 1), 1000, NULL), 0);
    FREE_LOOP_CLEAN(l);
}
