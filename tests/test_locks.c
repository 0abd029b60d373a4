/* tn_event and tn_queue (tornado.locks.Event, tornado.queues.Queue). Ports
 * what tornado/test/locks_test.py (Event) and queues_test.py check where the
 * C API has the same operation: Tornado's per-call timeouts become
 * tn_with_timeout, which cancels the waiter. */
#include "../tornado.h"
#include "tn_test.h"

#include <errno.h>

static void run_steps(tn_loop *l, int n) {
    int i;
    for (i = 0; i < n; i++) CHECK_EQ_INT(tn_loop_step(l, 0), 0);
}

static size_t live_coroutines(tn_loop *l) {
    tn_loop_stats st;
    tn_loop_get_stats(l, &st);
    return st.coroutines;
}

/* Consumes f: its error, and *value its value. */
static int settle(tn_future *f, void **value) {
    int err;
    REQUIRE(f != NULL);
    REQUIRE(tn_future_done(f));
    err = tn_future_error(f);
    if (value) *value = err ? NULL : tn_future_take(f);
    tn_future_release(f);
    return err;
}

static int items[128]; /* queue items are pointers to these */
#define ITEM(i) ((void *)&items[(i)])
#define INDEX(p) ((int)((int *)(p) - items))

/* ================================================================ Event */
TEST(event_wait_before_set) {
    tn_loop *l = new_loop();
    tn_event *ev = tn_event_new(l);
    tn_future *w;
    REQUIRE(ev != NULL);
    CHECK(!tn_event_is_set(ev));
    w = tn_event_wait(ev);
    REQUIRE(w != NULL);
    run_steps(l, 2);
    CHECK(!tn_future_done(w));
    tn_event_set(ev);
    CHECK(tn_event_is_set(ev));
    CHECK(tn_future_done(w));
    CHECK_EQ_INT(settle(w, NULL), 0);
    tn_event_free(ev);
    FREE_LOOP_CLEAN(l);
}

TEST(event_wait_after_set_is_done_at_once) {
    tn_loop *l = new_loop();
    tn_event *ev = tn_event_new(l);
    tn_future *w;
    tn_event_set(ev);
    w = tn_event_wait(ev);
    CHECK(tn_future_done(w));
    CHECK_EQ_INT(settle(w, NULL), 0);
    tn_event_free(ev);
    FREE_LOOP_CLEAN(l);
}

TEST(event_clear_makes_wait_block_again) {
    tn_loop *l = new_loop();
    tn_event *ev = tn_event_new(l);
    tn_future *w;
    tn_event_set(ev);
    tn_event_clear(ev);
    CHECK(!tn_event_is_set(ev));
    w = tn_event_wait(ev);
    run_steps(l, 1);
    CHECK(!tn_future_done(w));
    tn_event_set(ev);
    CHECK_EQ_INT(settle(w, NULL), 0);
    tn_event_free(ev);
    FREE_LOOP_CLEAN(l);
}

TEST(event_wait_clear_wait_set_wakes_both) {
    /* locks_test's test_event_wait_clear. */
    tn_loop *l = new_loop();
    tn_event *ev = tn_event_new(l);
    tn_future *f0, *f1;
    f0 = tn_event_wait(ev);
    tn_event_clear(ev);
    f1 = tn_event_wait(ev);
    tn_event_set(ev);
    CHECK(tn_future_done(f0));
    CHECK(tn_future_done(f1));
    CHECK_EQ_INT(settle(f0, NULL), 0);
    CHECK_EQ_INT(settle(f1, NULL), 0);
    tn_event_free(ev);
    FREE_LOOP_CLEAN(l);
}

TEST(event_set_twice) {
    tn_loop *l = new_loop();
    tn_event *ev = tn_event_new(l);
    tn_future *w = tn_event_wait(ev);
    tn_event_set(ev);
    tn_event_set(ev);
    CHECK(tn_event_is_set(ev));
    CHECK_EQ_INT(settle(w, NULL), 0);
    tn_event_free(ev);
    FREE_LOOP_CLEAN(l);
}

TEST(event_wait_timeout_then_set) {
    /* locks_test's test_event_timeout: a timed-out waiter leaves no trace. */
    tn_loop *l = new_loop();
    tn_event *ev = tn_event_new(l);
    CHECK_EQ_INT(tn_run_sync(l, tn_with_timeout(l, tn_event_wait(ev), 2), 0, NULL), TN_ETIMEOUT);
    run_steps(l, 1);
    tn_event_set(ev); /* must not touch the cancelled waiter */
    CHECK_EQ_INT(tn_run_sync(l, tn_with_timeout(l, tn_event_wait(ev), 60000), 0, NULL), 0);
    run_steps(l, 1);
    tn_event_free(ev);
    FREE_LOOP_CLEAN(l);
}

TEST(event_cancelled_waiter_not_resolved) {
    tn_loop *l = new_loop();
    tn_event *ev = tn_event_new(l);
    tn_future *a = tn_event_wait(ev), *b = tn_event_wait(ev);
    CHECK_EQ_INT(tn_future_cancel(a), 0);
    tn_event_set(ev);
    CHECK_EQ_INT(settle(a, NULL), TN_ECANCELLED);
    CHECK_EQ_INT(settle(b, NULL), 0);
    tn_event_free(ev);
    FREE_LOOP_CLEAN(l);
}

TEST(event_free_fails_waiters) {
    tn_loop *l = new_loop();
    tn_event *ev = tn_event_new(l);
    tn_future *a = tn_event_wait(ev), *b = tn_event_wait(ev);
    tn_event_free(ev);
    CHECK(tn_future_done(a));
    CHECK(tn_future_done(b));
    CHECK_EQ_INT(settle(a, NULL), TN_ECANCELLED);
    CHECK_EQ_INT(settle(b, NULL), TN_ECANCELLED);
    tn_event_free(NULL); /* harmless */
    FREE_LOOP_CLEAN(l);
}

/* Coroutines wait on an event another coroutine sets. */
static tn_event *go_event;
static int go_order[8], ngo;
struct ev_frame {
    tn_co co;
    int id;
};
static int ev_waiter(tn_co *co) {
    struct ev_frame *f = (struct ev_frame *)co;
    TN_BEGIN(co);
    TN_AWAIT(co, tn_event_wait(go_event));
    if (co->err) TN_FAIL(co, co->err);
    go_order[ngo++] = f->id;
    TN_END(co);
}
static int ev_setter(tn_co *co) {
    TN_BEGIN(co);
    TN_SLEEP(co, 2);
    go_order[ngo++] = 0;
    tn_event_set(go_event);
    TN_END(co);
}

TEST(event_coroutines_wake_in_wait_order) {
    tn_loop *l = new_loop();
    struct ev_frame w1, w2, s;
    tn_future *fs[3];
    memset(&w1, 0, sizeof w1);
    memset(&w2, 0, sizeof w2);
    memset(&s, 0, sizeof s);
    w1.id = 1;
    w2.id = 2;
    ngo = 0;
    go_event = tn_event_new(l);
    fs[0] = tn_spawn(l, &w1.co, ev_waiter);
    fs[1] = tn_spawn(l, &w2.co, ev_waiter);
    fs[2] = tn_spawn(l, &s.co, ev_setter);
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, 3, NULL), 0, NULL), 0);
    REQUIRE(ngo == 3);
    CHECK_EQ_INT(go_order[0], 0);
    CHECK_EQ_INT(go_order[1], 1);
    CHECK_EQ_INT(go_order[2], 2);
    tn_event_free(go_event);
    FREE_LOOP_CLEAN(l);
}

/* ================================================================ Queue */
TEST(queue_fifo_order) {
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 0);
    void *it;
    REQUIRE(q != NULL);
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(1)), 0);
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(3)), 0);
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(2)), 0);
    CHECK_EQ_INT(tn_queue_size(q), 3);
    CHECK_EQ_INT(tn_queue_try_get(q, &it), 0);
    CHECK(it == ITEM(1));
    CHECK_EQ_INT(tn_queue_try_get(q, &it), 0);
    CHECK(it == ITEM(3));
    CHECK_EQ_INT(tn_queue_try_get(q, &it), 0);
    CHECK(it == ITEM(2));
    CHECK_EQ_INT(tn_queue_size(q), 0);
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_fifo_across_wraparound) {
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 0);
    int i, next_out = 0, ok = 1;
    void *it;
    /* Interleave puts and gets so the ring wraps and grows mid-way. */
    for (i = 0; i < 100; i++) {
        CHECK_EQ_INT(tn_queue_try_put(q, ITEM(i)), 0);
        if (i % 3 == 2) {
            CHECK_EQ_INT(tn_queue_try_get(q, &it), 0);
            if (it != ITEM(next_out)) ok = 0;
            next_out++;
        }
    }
    while (tn_queue_try_get(q, &it) == 0) {
        if (it != ITEM(next_out)) ok = 0;
        next_out++;
    }
    CHECK(ok);
    CHECK_EQ_INT(next_out, 100);
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_try_put_full_try_get_empty) {
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 1);
    void *it = ITEM(9);
    CHECK_EQ_INT(tn_queue_try_get(q, &it), TN_EEMPTY);
    CHECK(it == ITEM(9)); /* untouched */
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(0)), 0);
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(1)), TN_EFULL);
    CHECK_EQ_INT(tn_queue_size(q), 1);
    CHECK_EQ_INT(tn_queue_try_get(q, &it), 0);
    CHECK(it == ITEM(0));
    CHECK_EQ_INT(tn_queue_try_get(q, &it), TN_EEMPTY);
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_bounded_put_blocks_until_get) {
    /* queues_test's test_maxsize: backpressure. */
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 2);
    tn_future *p0, *p1, *p2, *g;
    void *it;
    p0 = tn_queue_put(q, ITEM(0));
    p1 = tn_queue_put(q, ITEM(1));
    CHECK(tn_future_done(p0));
    CHECK(tn_future_done(p1));
    p2 = tn_queue_put(q, ITEM(2));
    run_steps(l, 2);
    CHECK(!tn_future_done(p2)); /* full: waits */
    CHECK_EQ_INT(tn_queue_size(q), 2);
    g = tn_queue_get(q); /* makes room */
    CHECK_EQ_INT(settle(g, &it), 0);
    CHECK(it == ITEM(0));
    CHECK(tn_future_done(p2));
    CHECK_EQ_INT(tn_queue_size(q), 2); /* 1 and 2 */
    CHECK_EQ_INT(settle(p0, NULL), 0);
    CHECK_EQ_INT(settle(p1, NULL), 0);
    CHECK_EQ_INT(settle(p2, NULL), 0);
    CHECK_EQ_INT(tn_queue_try_get(q, &it), 0);
    CHECK(it == ITEM(1));
    CHECK_EQ_INT(tn_queue_try_get(q, &it), 0);
    CHECK(it == ITEM(2));
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_get_with_putters) {
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 1);
    tn_future *put;
    void *it;
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(0)), 0);
    put = tn_queue_put(q, ITEM(1));
    CHECK(!tn_future_done(put));
    CHECK_EQ_INT(settle(tn_queue_get(q), &it), 0);
    CHECK(it == ITEM(0));
    CHECK_EQ_INT(tn_run_sync(l, put, 0, NULL), 0);
    CHECK_EQ_INT(settle(tn_queue_get(q), &it), 0);
    CHECK(it == ITEM(1));
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

static tn_queue *timer_q;
static void put_item_cb(tn_loop *l, void *arg) {
    (void)l;
    CHECK_EQ_INT(tn_queue_try_put(timer_q, arg), 0);
}

TEST(queue_get_waits_for_put) {
    /* queues_test's test_blocking_get_wait. */
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 0);
    tn_future *g;
    void *it = NULL;
    timer_q = q;
    g = tn_queue_get(q);
    run_steps(l, 2);
    CHECK(!tn_future_done(g)); /* empty, nothing scheduled: it waits */
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(0)), 0);
    CHECK_EQ_INT(tn_queue_size(q), 0); /* handed straight to the getter */
    CHECK_EQ_INT(tn_run_sync(l, g, 0, &it), 0);
    CHECK(it == ITEM(0));
    CHECK_EQ_INT(tn_call_later(l, 1, put_item_cb, ITEM(1), NULL), 0);
    CHECK_EQ_INT(tn_call_later(l, 2, put_item_cb, ITEM(2), NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_with_timeout(l, tn_queue_get(q), 60000), 0, &it), 0);
    CHECK(it == ITEM(1));
    CHECK_EQ_INT(tn_run_sync(l, tn_with_timeout(l, tn_queue_get(q), 60000), 0, &it), 0);
    CHECK(it == ITEM(2));
    run_steps(l, 1);
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_put_goes_to_waiting_getters_in_order) {
    /* queues_test's test_put_with_getters. */
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 0);
    tn_future *g0 = tn_queue_get(q), *g1 = tn_queue_get(q);
    void *it;
    CHECK_EQ_INT(settle(tn_queue_put(q, ITEM(0)), NULL), 0);
    CHECK_EQ_INT(tn_queue_size(q), 0); /* straight to the getter */
    CHECK_EQ_INT(settle(g0, &it), 0);
    CHECK(it == ITEM(0));
    CHECK(!tn_future_done(g1));
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(1)), 0);
    CHECK_EQ_INT(settle(g1, &it), 0);
    CHECK(it == ITEM(1));
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_get_timeout_leaves_next_getter_active) {
    /* queues_test's test_get_timeout. */
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 0);
    tn_future *timed = tn_with_timeout(l, tn_queue_get(q), 2), *get = tn_queue_get(q);
    void *it = NULL;
    CHECK_EQ_INT(tn_run_sync(l, timed, 0, NULL), TN_ETIMEOUT);
    CHECK(!tn_future_done(get));
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(0)), 0);
    CHECK_EQ_INT(tn_run_sync(l, get, 0, &it), 0);
    CHECK(it == ITEM(0));
    run_steps(l, 1);
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_put_timeout_item_never_queued) {
    /* queues_test's test_put_timeout. */
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 1);
    tn_future *timed, *put;
    void *it = NULL;
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(0)), 0); /* full */
    timed = tn_with_timeout(l, tn_queue_put(q, ITEM(1)), 2);
    put = tn_queue_put(q, ITEM(2));
    CHECK_EQ_INT(tn_run_sync(l, timed, 0, NULL), TN_ETIMEOUT);
    CHECK_EQ_INT(tn_queue_try_get(q, &it), 0);
    CHECK(it == ITEM(0));
    /* 1 was never put: 2 is next, and its putter is done. */
    CHECK_EQ_INT(tn_run_sync(l, tn_queue_get(q), 0, &it), 0);
    CHECK(it == ITEM(2));
    CHECK_EQ_INT(tn_run_sync(l, put, 0, NULL), 0);
    CHECK_EQ_INT(tn_queue_size(q), 0);
    run_steps(l, 1);
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_cancelled_get_does_not_lose_next_item) {
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 0);
    tn_future *g = tn_queue_get(q);
    void *it;
    CHECK_EQ_INT(tn_future_cancel(g), 0);
    CHECK_EQ_INT(settle(g, NULL), TN_ECANCELLED);
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(5)), 0);
    CHECK_EQ_INT(tn_queue_size(q), 1); /* queued, not handed to the dead get */
    CHECK_EQ_INT(settle(tn_queue_get(q), &it), 0);
    CHECK(it == ITEM(5));
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_many_timed_out_getters_then_put) {
    /* queues_test's test_put_clears_timed_out_getters: only the live getter
     * receives the item. */
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 0);
    tn_future *timed[10], *get;
    void *it = NULL;
    int i;
    for (i = 0; i < 10; i++) timed[i] = tn_with_timeout(l, tn_queue_get(q), 1);
    get = tn_queue_get(q);
    for (i = 0; i < 10; i++) CHECK_EQ_INT(tn_run_sync(l, timed[i], 0, NULL), TN_ETIMEOUT);
    CHECK(!tn_future_done(get));
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(0)), 0);
    CHECK_EQ_INT(tn_run_sync(l, get, 0, &it), 0);
    CHECK(it == ITEM(0));
    CHECK_EQ_INT(tn_queue_size(q), 0);
    run_steps(l, 1);
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_cancelled_put_item_not_queued) {
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 1);
    tn_future *p;
    void *it;
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(0)), 0);
    p = tn_queue_put(q, ITEM(1));
    CHECK_EQ_INT(tn_future_cancel(p), 0);
    CHECK_EQ_INT(settle(p, NULL), TN_ECANCELLED);
    CHECK_EQ_INT(tn_queue_try_get(q, &it), 0);
    CHECK(it == ITEM(0));
    CHECK_EQ_INT(tn_queue_size(q), 0); /* 1 did not slip in */
    CHECK_EQ_INT(tn_queue_try_get(q, &it), TN_EEMPTY);
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

/* An item handed to a getter in the same iteration as the getter's timeout
 * fires, but before it: the item must come out of one place or the other,
 * never vanish. */
TEST(queue_item_delivered_at_timeout_is_not_lost) {
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 0);
    tn_future *timed;
    void *it = NULL;
    int rc;
    timer_q = q;
    timed = tn_with_timeout(l, tn_queue_get(q), 0); /* due at once */
    CHECK_EQ_INT(tn_add_callback(l, put_item_cb, ITEM(7)), 0); /* callbacks run first */
    rc = tn_run_sync(l, timed, 0, &it);
    if (rc == 0) {
        CHECK(it == ITEM(7));
    } else {
        CHECK_EQ_INT(rc, TN_ETIMEOUT);
        CHECK_EQ_INT(tn_queue_try_get(q, &it), 0);
        CHECK(it == ITEM(7));
    }
    run_steps(l, 1);
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_free_fails_pending_getters_and_putters) {
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 1), *q2 = tn_queue_new(l, 0);
    tn_future *p, *g, *j;
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(0)), 0);
    p = tn_queue_put(q, ITEM(1));
    j = tn_queue_join(q);
    g = tn_queue_get(q2);
    tn_queue_free(q);
    tn_queue_free(q2);
    CHECK_EQ_INT(settle(p, NULL), TN_ECANCELLED);
    CHECK_EQ_INT(settle(j, NULL), TN_ECANCELLED);
    CHECK_EQ_INT(settle(g, NULL), TN_ECANCELLED);
    tn_queue_free(NULL);
    FREE_LOOP_CLEAN(l);
}

/* --------------------------------------------------------- join / done */
TEST(queue_task_done_too_many_is_estate) {
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 0);
    void *it;
    CHECK_EQ_INT(tn_queue_task_done(q), TN_ESTATE);
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(0)), 0);
    CHECK_EQ_INT(tn_queue_try_get(q, &it), 0);
    CHECK_EQ_INT(tn_queue_task_done(q), 0);
    CHECK_EQ_INT(tn_queue_task_done(q), TN_ESTATE);
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_join_empty_queue_resolves) {
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_queue_join(q), 1000, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_queue_join(q), 1000, NULL), 0);
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_join_resolves_after_task_done_for_all) {
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 0);
    tn_future *j1, *j2;
    void *it;
    int i;
    for (i = 0; i < 10; i++) CHECK_EQ_INT(tn_queue_try_put(q, ITEM(i)), 0);
    j1 = tn_queue_join(q);
    j2 = tn_queue_join(q);
    for (i = 0; i < 10; i++) CHECK_EQ_INT(tn_queue_try_get(q, &it), 0);
    CHECK(!tn_future_done(j1)); /* got, but not done */
    for (i = 0; i < 9; i++) CHECK_EQ_INT(tn_queue_task_done(q), 0);
    run_steps(l, 1);
    CHECK(!tn_future_done(j1));
    CHECK_EQ_INT(tn_queue_task_done(q), 0);
    CHECK(tn_future_done(j1));
    CHECK(tn_future_done(j2));
    CHECK_EQ_INT(settle(j1, NULL), 0);
    CHECK_EQ_INT(settle(j2, NULL), 0);
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

TEST(queue_join_timeout) {
    tn_loop *l = new_loop();
    tn_queue *q = tn_queue_new(l, 0);
    void *it;
    CHECK_EQ_INT(tn_queue_try_put(q, ITEM(0)), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_with_timeout(l, tn_queue_join(q), 2), 0, NULL), TN_ETIMEOUT);
    CHECK_EQ_INT(tn_queue_try_get(q, &it), 0);
    CHECK_EQ_INT(tn_queue_task_done(q), 0); /* the timed-out joiner is gone */
    run_steps(l, 1);
    tn_queue_free(q);
    FREE_LOOP_CLEAN(l);
}

/* queues_test's test_task_done: two workers share 100 items. */
static tn_queue *work_q;
static int work_sum;
static unsigned work_seed = 7;
struct worker_frame {
    tn_co co;
    int err;
};
static int worker(tn_co *co) {
    struct worker_frame *w = (struct worker_frame *)co;
    TN_BEGIN(co);
    for (;;) {
        TN_AWAIT(co, tn_queue_get(work_q));
        if (co->err) break;
        work_sum += INDEX(co->value);
        CHECK_EQ_INT(tn_queue_task_done(work_q), 0);
        work_seed = work_seed * 1103515245u + 12345u;
        TN_SLEEP(co, (work_seed >> 16) % 2);
        if (co->err) break;
    }
    w->err = co->err;
    TN_END(co);
}

TEST(queue_task_done_two_workers_then_join) {
    tn_loop *l = new_loop();
    struct worker_frame *w1 = TN_CO_NEW(l, struct worker_frame), *w2 = TN_CO_NEW(l, struct worker_frame);
    tn_future *f1, *f2;
    int i;
    REQUIRE(w1 && w2);
    work_q = tn_queue_new(l, 0);
    work_sum = 0;
    for (i = 0; i < 100; i++) CHECK_EQ_INT(tn_queue_try_put(work_q, ITEM(i)), 0);
    f1 = tn_spawn(l, &w1->co, worker);
    f2 = tn_spawn(l, &w2->co, worker);
    CHECK_EQ_INT(tn_run_sync(l, tn_queue_join(work_q), 0, NULL), 0);
    CHECK_EQ_INT(work_sum, 99 * 100 / 2);
    /* Stop the workers (blocked in get, or asleep): they end cleanly. */
    CHECK_EQ_INT(tn_future_cancel(f1), 0);
    CHECK_EQ_INT(tn_future_cancel(f2), 0);
    tn_future_release(f1);
    tn_future_release(f2);
    for (i = 0; i < 20 && live_coroutines(l); i++) CHECK_EQ_INT(tn_loop_step(l, 50), 0);
    CHECK_EQ_INT(live_coroutines(l), 0);
    tn_queue_free(work_q);
    FREE_LOOP_CLEAN(l);
}

/* queues_test's test_producer_consumer over a bounded queue. */
static tn_queue *pc_q;
static int history[16], nhistory, max_size_seen;
struct producer_frame {
    tn_co co;
    int i;
};
static int producer(tn_co *co) {
    struct producer_frame *p = (struct producer_frame *)co;
    TN_BEGIN(co);
    for (p->i = 0; p->i < 10; p->i++) {
        TN_AWAIT(co, tn_queue_put(pc_q, ITEM(p->i)));
        if (co->err) TN_FAIL(co, co->err);
        if ((int)tn_queue_size(pc_q) > max_size_seen) max_size_seen = (int)tn_queue_size(pc_q);
    }
    TN_END(co);
}
static int consumer(tn_co *co) {
    TN_BEGIN(co);
    for (;;) {
        TN_AWAIT(co, tn_queue_get(pc_q));
        if (co->err) TN_FAIL(co, co->err);
        if (nhistory < 16) history[nhistory++] = INDEX(co->value);
        CHECK_EQ_INT(tn_queue_task_done(pc_q), 0);
    }
    TN_END(co);
}

TEST(queue_producer_consumer_coroutines) {
    tn_loop *l = new_loop();
    struct producer_frame p;
    tn_co c;
    tn_future *fp, *fc;
    int i;
    memset(&p, 0, sizeof p);
    memset(&c, 0, sizeof c);
    pc_q = tn_queue_new(l, 3);
    nhistory = max_size_seen = 0;
    fp = tn_spawn(l, &p.co, producer);
    fc = tn_spawn(l, &c, consumer);
    CHECK_EQ_INT(tn_run_sync(l, fp, 0, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_queue_join(pc_q), 0, NULL), 0);
    REQUIRE(nhistory == 10);
    for (i = 0; i < 10; i++) CHECK_EQ_INT(history[i], i);
    CHECK(max_size_seen <= 3); /* backpressure held */
    CHECK_EQ_INT(tn_queue_size(pc_q), 0);
    /* The consumer waits forever in get: cancel it. */
    CHECK(!tn_future_done(fc));
    CHECK_EQ_INT(tn_future_cancel(fc), 0);
    for (i = 0; i < 20 && live_coroutines(l); i++) CHECK_EQ_INT(tn_loop_step(l, 50), 0);
    CHECK_EQ_INT(settle(fc, NULL), TN_ECANCELLED);
    tn_queue_free(pc_q);
    FREE_LOOP_CLEAN(l);
}
