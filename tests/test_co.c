/* Stackless coroutines: TN_BEGIN / TN_AWAIT / TN_YIELD / TN_SLEEP /
 * TN_WAIT_UNTIL / TN_RETURN / TN_FAIL / TN_END, spawning, awaiting children,
 * errors, cancellation, frames from tn_co_new, and composition with
 * tn_all / tn_any / tn_with_timeout. Ports what tornado/test/gen_test.py
 * checks about coroutines where it applies. Every frame keeps what must
 * survive an await in the frame struct, never in locals. */
#include "../tornado.h"
#include "tn_test.h"

#include <errno.h>

static size_t live_coroutines(tn_loop *l) {
    tn_loop_stats st;
    tn_loop_get_stats(l, &st);
    return st.coroutines;
}

/* Steps until *flag is non-zero (at most max steps of <= 50 ms each). */
static int step_until_set(tn_loop *l, const int *flag, int max) {
    int n = 0;
    while (!*flag && n < max) {
        CHECK_EQ_INT(tn_loop_step(l, 50), 0);
        n++;
    }
    return n;
}

static int frees;
static void count_free(void *p) {
    frees++;
    free(p);
}

static void cb_fail_eio(tn_loop *l, void *arg) {
    (void)l;
    CHECK_EQ_INT(tn_future_fail((tn_future *)arg, -EIO), 0);
}
static int marker_a, marker_b;
static void cb_resolve_a(tn_loop *l, void *arg) {
    (void)l;
    CHECK_EQ_INT(tn_future_resolve((tn_future *)arg, &marker_a), 0);
}
static void cb_resolve_b(tn_loop *l, void *arg) {
    (void)l;
    CHECK_EQ_INT(tn_future_resolve((tn_future *)arg, &marker_b), 0);
}
static void set_flag(tn_loop *l, void *arg) {
    (void)l;
    *(int *)arg = 1;
}

/* ------------------------------------------------------ spawn and return */
struct ret_frame {
    tn_co co;
    int steps;
};
static int ret_after_sleep(tn_co *co) {
    struct ret_frame *f = (struct ret_frame *)co;
    TN_BEGIN(co);
    f->steps++;
    TN_SLEEP(co, 1);
    CHECK_EQ_INT(co->err, 0);
    f->steps++;
    TN_RETURN(co, &marker_a);
    TN_END(co);
}

TEST(co_spawn_returns_future_of_result) {
    tn_loop *l = new_loop();
    struct ret_frame fr;
    tn_future *f;
    void *v = NULL;
    memset(&fr, 0, sizeof fr);
    f = tn_spawn(l, &fr.co, ret_after_sleep);
    REQUIRE(f != NULL);
    CHECK_EQ_INT(fr.steps, 1); /* ran up to its first suspension, now */
    CHECK(!tn_future_done(f));
    CHECK_EQ_INT(live_coroutines(l), 1);
    CHECK_EQ_INT(tn_run_sync(l, f, 0, &v), 0);
    CHECK(v == &marker_a);
    CHECK_EQ_INT(fr.steps, 2);
    FREE_LOOP_CLEAN(l);
}

static int ret_at_once(tn_co *co) {
    TN_BEGIN(co);
    TN_RETURN(co, &marker_b);
    TN_END(co);
}
static int ends_without_return(tn_co *co) {
    TN_BEGIN(co);
    TN_END(co);
}

TEST(co_without_suspension_is_done_after_spawn) {
    tn_loop *l = new_loop();
    tn_co c1, c2;
    tn_future *f;
    memset(&c1, 0, sizeof c1);
    memset(&c2, 0, sizeof c2);
    f = tn_spawn(l, &c1, ret_at_once);
    REQUIRE(f != NULL);
    CHECK(tn_future_done(f));
    CHECK(tn_future_value(f) == &marker_b);
    CHECK_EQ_INT(live_coroutines(l), 0);
    tn_future_release(f);
    f = tn_spawn(l, &c2, ends_without_return); /* TN_END resolves with NULL */
    CHECK(tn_future_done(f));
    CHECK_EQ_INT(tn_future_error(f), 0);
    CHECK(tn_future_value(f) == NULL);
    tn_future_release(f);
    FREE_LOOP_CLEAN(l);
}

/* ------------------------------------------------------- errors on await */
struct err_frame {
    tn_co co;
    tn_future *in;
    int seen_err, after;
};
static int await_and_propagate(tn_co *co) {
    struct err_frame *f = (struct err_frame *)co;
    TN_BEGIN(co);
    TN_AWAIT(co, f->in);
    f->seen_err = co->err;
    if (co->err) TN_FAIL(co, co->err);
    f->after = 1; /* not reached */
    TN_END(co);
}

TEST(co_await_failed_future_propagates_with_fail) {
    tn_loop *l = new_loop();
    struct err_frame fr;
    memset(&fr, 0, sizeof fr);
    fr.in = tn_future_new(l);
    CHECK_EQ_INT(tn_call_later(l, 1, cb_fail_eio, fr.in, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_spawn(l, &fr.co, await_and_propagate), 0, NULL), -EIO);
    CHECK_EQ_INT(fr.seen_err, -EIO);
    CHECK_EQ_INT(fr.after, 0);
    FREE_LOOP_CLEAN(l);
}

static int await_and_recover(tn_co *co) {
    struct err_frame *f = (struct err_frame *)co;
    TN_BEGIN(co);
    TN_AWAIT(co, f->in);
    f->seen_err = co->err;
    CHECK(co->value == NULL);
    /* handled: carry on with something else */
    TN_SLEEP(co, 1);
    f->after = co->err == 0;
    TN_RETURN(co, &marker_b);
    TN_END(co);
}

TEST(co_await_failed_future_handled_and_continues) {
    tn_loop *l = new_loop();
    struct err_frame fr;
    void *v = NULL;
    memset(&fr, 0, sizeof fr);
    fr.in = tn_future_new(l);
    CHECK_EQ_INT(tn_call_later(l, 1, cb_fail_eio, fr.in, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_spawn(l, &fr.co, await_and_recover), 0, &v), 0);
    CHECK(v == &marker_b);
    CHECK_EQ_INT(fr.seen_err, -EIO);
    CHECK_EQ_INT(fr.after, 1);
    FREE_LOOP_CLEAN(l);
}

struct null_frame {
    tn_co co;
    int err;
};
static int await_null(tn_co *co) {
    struct null_frame *f = (struct null_frame *)co;
    TN_BEGIN(co);
    TN_AWAIT(co, (tn_future *)NULL); /* what a failed allocation gives */
    f->err = co->err;
    TN_END(co);
}

TEST(co_await_null_future_is_enomem) {
    tn_loop *l = new_loop();
    struct null_frame fr;
    memset(&fr, 0, sizeof fr);
    CHECK_EQ_INT(tn_run_sync(l, tn_spawn(l, &fr.co, await_null), 0, NULL), 0);
    CHECK_EQ_INT(fr.err, TN_ENOMEM);
    FREE_LOOP_CLEAN(l);
}

/* An await of a future that is already done continues at once. */
struct done_frame {
    tn_co co;
    tn_future *in;
    void *got;
};
static int await_done(tn_co *co) {
    struct done_frame *f = (struct done_frame *)co;
    TN_BEGIN(co);
    TN_AWAIT(co, f->in);
    f->got = co->value;
    TN_RETURN(co, co->value);
    TN_END(co);
}

TEST(co_await_of_done_future_continues_at_once) {
    tn_loop *l = new_loop();
    struct done_frame fr;
    tn_future *f;
    memset(&fr, 0, sizeof fr);
    fr.in = tn_future_new(l);
    CHECK_EQ_INT(tn_future_resolve(fr.in, &marker_a), 0);
    f = tn_spawn(l, &fr.co, await_done);
    CHECK(tn_future_done(f));
    CHECK(fr.got == &marker_a);
    CHECK_EQ_INT(tn_run_sync(l, f, 0, NULL), 0);
    FREE_LOOP_CLEAN(l);
}

/* --------------------------------------------- two awaits on one line */
struct two_frame {
    tn_co co;
    tn_future *fa, *fb;
    void *a, *b;
    int resumes;
};
static int two_awaits_one_line(tn_co *co) {
    struct two_frame *f = (struct two_frame *)co;
    TN_BEGIN(co);
    /* clang-format off */
    TN_AWAIT(co, f->fa); f->a = co->value; f->resumes++; TN_AWAIT(co, f->fb); f->b = co->value; f->resumes++;
    /* clang-format on */
    TN_END(co);
}

TEST(co_two_awaits_on_the_same_line) {
    tn_loop *l = new_loop();
    struct two_frame fr;
    memset(&fr, 0, sizeof fr);
    fr.fa = tn_future_new(l);
    fr.fb = tn_future_new(l);
    CHECK_EQ_INT(tn_call_later(l, 1, cb_resolve_a, fr.fa, NULL), 0);
    CHECK_EQ_INT(tn_call_later(l, 3, cb_resolve_b, fr.fb, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_spawn(l, &fr.co, two_awaits_one_line), 0, NULL), 0);
    CHECK(fr.a == &marker_a);
    CHECK(fr.b == &marker_b);
    CHECK_EQ_INT(fr.resumes, 2); /* each resumed where it should, once */
    FREE_LOOP_CLEAN(l);
}

/* ------------------------------------------------------- child coroutines */
struct child_frame {
    tn_co co;
    int v;
};
static int child_fn(tn_co *co) {
    struct child_frame *c = (struct child_frame *)co;
    int *out;
    TN_BEGIN(co);
    TN_SLEEP(co, 1);
    out = (int *)malloc(sizeof *out);
    if (!out) TN_FAIL(co, TN_ENOMEM);
    *out = c->v * 2;
    TN_RETURN_OWNED(co, out, count_free);
    TN_END(co);
}
struct parent_frame {
    tn_co co;
    int got, err;
};
static int parent_fn(tn_co *co) {
    struct parent_frame *p = (struct parent_frame *)co;
    struct child_frame *c;
    TN_BEGIN(co);
    c = TN_CO_NEW(co->loop, struct child_frame);
    if (!c) TN_FAIL(co, TN_ENOMEM);
    c->v = 21;
    TN_AWAIT(co, tn_spawn(co->loop, &c->co, child_fn));
    p->err = co->err;
    if (co->value) {
        p->got = *(int *)co->value;
        count_free(co->value); /* the value is ours */
    }
    TN_END(co);
}

TEST(co_awaits_child_coroutine) {
    tn_loop *l = new_loop();
    struct parent_frame p;
    memset(&p, 0, sizeof p);
    frees = 0;
    CHECK_EQ_INT(tn_run_sync(l, tn_spawn(l, &p.co, parent_fn), 0, NULL), 0);
    CHECK_EQ_INT(p.err, 0);
    CHECK_EQ_INT(p.got, 42);
    CHECK_EQ_INT(frees, 1); /* freed once, by its new owner */
    FREE_LOOP_CLEAN(l);     /* the child's tn_co_new frame is gone */
}

/* Recursion: each level spawns the next and adds its result. */
struct rec_frame {
    tn_co co;
    int depth;
    intptr_t sum;
};
static int rec_fn(tn_co *co) {
    struct rec_frame *r = (struct rec_frame *)co;
    struct rec_frame *c;
    TN_BEGIN(co);
    if (r->depth == 0) {
        TN_YIELD(co);
        TN_RETURN(co, (void *)(intptr_t)0);
    }
    c = TN_CO_NEW(co->loop, struct rec_frame);
    if (!c) TN_FAIL(co, TN_ENOMEM);
    c->depth = r->depth - 1;
    TN_AWAIT(co, tn_spawn(co->loop, &c->co, rec_fn));
    if (co->err) TN_FAIL(co, co->err);
    r->sum = (intptr_t)co->value + r->depth;
    TN_RETURN(co, (void *)r->sum);
    TN_END(co);
}

TEST(co_nested_children) {
    tn_loop *l = new_loop();
    struct rec_frame *top = TN_CO_NEW(l, struct rec_frame);
    void *v = NULL;
    REQUIRE(top != NULL);
    top->depth = 10;
    CHECK_EQ_INT(tn_run_sync(l, tn_spawn(l, &top->co, rec_fn), 0, &v), 0);
    CHECK_EQ_INT((intptr_t)v, 55);
    FREE_LOOP_CLEAN(l);
}

/* ------------------------------------------------------------- TN_YIELD */
static int ylog[32], nylog;
struct y_frame {
    tn_co co;
    int id, i;
};
static int yielder(tn_co *co) {
    struct y_frame *y = (struct y_frame *)co;
    TN_BEGIN(co);
    for (y->i = 0; y->i < 3; y->i++) {
        if (nylog < 32) ylog[nylog++] = y->id * 10 + y->i;
        TN_YIELD(co);
        CHECK_EQ_INT(co->err, 0);
    }
    TN_END(co);
}

TEST(co_yield_interleaves_two_coroutines) {
    tn_loop *l = new_loop();
    struct y_frame a, b;
    tn_future *fs[2];
    static const int want[6] = {10, 20, 11, 21, 12, 22};
    int i;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.id = 1;
    b.id = 2;
    nylog = 0;
    fs[0] = tn_spawn(l, &a.co, yielder);
    fs[1] = tn_spawn(l, &b.co, yielder);
    CHECK_EQ_INT(nylog, 2); /* each ran to its first yield */
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(nylog, 4); /* one turn each per iteration */
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, 2, NULL), 0, NULL), 0);
    REQUIRE(nylog == 6);
    for (i = 0; i < 6; i++) CHECK_EQ_INT(ylog[i], want[i]);
    FREE_LOOP_CLEAN(l);
}

/* A callback queued before a yield runs before the yielded coroutine: a
 * yield goes to the back of the queue. */
static void log_cb(tn_loop *l, void *arg) {
    (void)l;
    if (nylog < 32) ylog[nylog++] = (int)(intptr_t)arg;
}
struct y2_frame {
    tn_co co;
};
static int yield_once(tn_co *co) {
    TN_BEGIN(co);
    tn_add_callback(co->loop, log_cb, (void *)(intptr_t)1);
    TN_YIELD(co);
    log_cb(co->loop, (void *)(intptr_t)2);
    TN_END(co);
}

TEST(co_yield_goes_behind_queued_callbacks) {
    tn_loop *l = new_loop();
    struct y2_frame y;
    memset(&y, 0, sizeof y);
    nylog = 0;
    CHECK_EQ_INT(tn_run_sync(l, tn_spawn(l, &y.co, yield_once), 0, NULL), 0);
    REQUIRE(nylog == 2);
    CHECK_EQ_INT(ylog[0], 1);
    CHECK_EQ_INT(ylog[1], 2);
    FREE_LOOP_CLEAN(l);
}

/* --------------------------------------------------------- TN_WAIT_UNTIL */
static int wait_flag;
struct w_frame {
    tn_co co;
    int err, woke;
};
static int waiter(tn_co *co) {
    struct w_frame *w = (struct w_frame *)co;
    TN_BEGIN(co);
    TN_WAIT_UNTIL(co, wait_flag);
    w->err = co->err;
    w->woke = 1;
    TN_END(co);
}

TEST(co_wait_until_wakes_and_does_not_spin) {
    tn_loop *l = new_loop();
    struct w_frame w;
    tn_future *f;
    int steps = 0;
    memset(&w, 0, sizeof w);
    wait_flag = 0;
    f = tn_spawn(l, &w.co, waiter);
    CHECK(!tn_future_done(f));
    CHECK_EQ_INT(tn_call_later(l, 50, set_flag, &wait_flag, NULL), 0);
    /* Nothing else happens for 50 ms: a waiting coroutine must let the loop
     * block (a spinning one would take thousands of steps). */
    while (!tn_future_done(f) && steps < 1000) {
        CHECK_EQ_INT(tn_loop_step(l, -1), 0);
        steps++;
    }
    CHECK(tn_future_done(f));
    CHECK(steps < 20);
    CHECK_EQ_INT(w.woke, 1);
    CHECK_EQ_INT(w.err, 0);
    CHECK_EQ_INT(tn_run_sync(l, f, 0, NULL), 0);
    FREE_LOOP_CLEAN(l);
}

TEST(co_wait_until_already_true_does_not_suspend) {
    tn_loop *l = new_loop();
    struct w_frame w;
    tn_future *f;
    memset(&w, 0, sizeof w);
    wait_flag = 1;
    f = tn_spawn(l, &w.co, waiter);
    CHECK(tn_future_done(f));
    CHECK_EQ_INT(w.woke, 1);
    CHECK_EQ_INT(w.err, 0);
    tn_future_release(f);
    FREE_LOOP_CLEAN(l);
}

/* The flag is set by another coroutine, not a timer. */
struct setter_frame {
    tn_co co;
};
static int setter(tn_co *co) {
    TN_BEGIN(co);
    TN_SLEEP(co, 2);
    wait_flag = 1;
    TN_END(co);
}

TEST(co_wait_until_set_by_another_coroutine) {
    tn_loop *l = new_loop();
    struct w_frame w;
    struct setter_frame s;
    tn_future *fs[2];
    memset(&w, 0, sizeof w);
    memset(&s, 0, sizeof s);
    wait_flag = 0;
    fs[0] = tn_spawn(l, &w.co, waiter);
    fs[1] = tn_spawn(l, &s.co, setter);
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, 2, NULL), 0, NULL), 0);
    CHECK_EQ_INT(w.woke, 1);
    FREE_LOOP_CLEAN(l);
}

TEST(co_wait_until_cancelled) {
    tn_loop *l = new_loop();
    struct w_frame w;
    tn_future *f;
    memset(&w, 0, sizeof w);
    wait_flag = 0;
    f = tn_spawn(l, &w.co, waiter);
    CHECK_EQ_INT(tn_future_cancel(f), 0);
    /* A coroutine's future completes once the coroutine has unwound. */
    CHECK_EQ_INT(tn_future_error(f), TN_ESTATE);
    step_until_set(l, &w.woke, 100);
    CHECK_EQ_INT(tn_future_error(f), TN_ECANCELLED);
    CHECK_EQ_INT(w.woke, 1);
    CHECK_EQ_INT(w.err, TN_ECANCELLED);
    CHECK_EQ_INT(wait_flag, 0);
    tn_future_release(f);
    FREE_LOOP_CLEAN(l);
}

TEST(co_many_waiters_all_wake) {
    tn_loop *l = new_loop();
    enum { N = 50 };
    struct w_frame *w[N];
    tn_future *fs[N];
    int i, woke = 0;
    wait_flag = 0;
    for (i = 0; i < N; i++) {
        w[i] = (struct w_frame *)calloc(1, sizeof **w);
        REQUIRE(w[i] != NULL);
        fs[i] = tn_spawn(l, &w[i]->co, waiter);
    }
    CHECK_EQ_INT(tn_call_later(l, 2, set_flag, &wait_flag, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, N, NULL), 0, NULL), 0);
    for (i = 0; i < N; i++) {
        woke += w[i]->woke;
        free(w[i]);
    }
    CHECK_EQ_INT(woke, N);
    FREE_LOOP_CLEAN(l);
}

/* ----------------------------------------------------------- cancellation */
static int sleeper_resumed, sleeper_err, sleeper_saw_flag;
struct sleeper_frame {
    tn_co co;
};
static int long_sleeper(tn_co *co) {
    TN_BEGIN(co);
    TN_SLEEP(co, 60000);
    sleeper_err = co->err;
    sleeper_saw_flag = TN_CANCELLED(co);
    sleeper_resumed = 1;
    TN_RETURN(co, NULL);
    TN_END(co);
}

TEST(co_cancel_via_with_timeout_resumes_with_ecancelled) {
    tn_loop *l = new_loop();
    struct sleeper_frame *s = TN_CO_NEW(l, struct sleeper_frame);
    REQUIRE(s != NULL);
    sleeper_resumed = sleeper_err = sleeper_saw_flag = 0;
    CHECK_EQ_INT(tn_run_sync(l, tn_with_timeout(l, tn_spawn(l, &s->co, long_sleeper), 5), 0, NULL),
                 TN_ETIMEOUT);
    step_until_set(l, &sleeper_resumed, 100);
    CHECK_EQ_INT(sleeper_resumed, 1);
    CHECK_EQ_INT(sleeper_err, TN_ECANCELLED);
    CHECK(sleeper_saw_flag);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0); /* with_timeout's done callback lets go of it */
    FREE_LOOP_CLEAN(l); /* the sleep's timer was cancelled, the frame freed */
}

TEST(co_cancel_directly) {
    tn_loop *l = new_loop();
    struct sleeper_frame s;
    tn_future *f;
    memset(&s, 0, sizeof s);
    sleeper_resumed = sleeper_err = 0;
    f = tn_spawn(l, &s.co, long_sleeper);
    CHECK_EQ_INT(tn_future_cancel(f), 0);
    /* Asked, not yet done: the coroutine has not unwound. */
    CHECK_EQ_INT(tn_future_error(f), TN_ESTATE);
    CHECK_EQ_INT(tn_future_cancel(f), 0);
    /* It resumes on a later iteration, not inside cancel. */
    CHECK_EQ_INT(sleeper_resumed, 0);
    step_until_set(l, &sleeper_resumed, 100);
    CHECK_EQ_INT(sleeper_err, TN_ECANCELLED);
    CHECK_EQ_INT(tn_future_error(f), TN_ECANCELLED);
    CHECK_EQ_INT(tn_future_cancel(f), TN_ESTATE);
    tn_future_release(f);
    FREE_LOOP_CLEAN(l);
}

/* Cancelling a parent reaches the child it awaits. */
static int chain_child_err = 1, chain_parent_err = 1;
static int chain_child(tn_co *co) {
    TN_BEGIN(co);
    TN_SLEEP(co, 60000);
    chain_child_err = co->err;
    TN_END(co);
}
static int chain_parent(tn_co *co) {
    tn_co *c;
    TN_BEGIN(co);
    c = TN_CO_NEW(co->loop, tn_co);
    if (!c) TN_FAIL(co, TN_ENOMEM);
    TN_AWAIT(co, tn_spawn(co->loop, c, chain_child));
    chain_parent_err = co->err;
    TN_END(co);
}

TEST(co_cancel_propagates_to_awaited_child) {
    tn_loop *l = new_loop();
    tn_co *p = TN_CO_NEW(l, tn_co);
    tn_future *f;
    int i;
    REQUIRE(p != NULL);
    chain_child_err = chain_parent_err = 1;
    f = tn_spawn(l, p, chain_parent);
    CHECK_EQ_INT(live_coroutines(l), 2);
    CHECK_EQ_INT(tn_future_cancel(f), 0);
    for (i = 0; i < 20 && live_coroutines(l); i++) CHECK_EQ_INT(tn_loop_step(l, 50), 0);
    CHECK_EQ_INT(chain_child_err, TN_ECANCELLED);
    CHECK_EQ_INT(chain_parent_err, TN_ECANCELLED);
    tn_future_release(f);
    FREE_LOOP_CLEAN(l);
}

static int yc_err = 1, yc_done;
static int yield_then_record(tn_co *co) {
    TN_BEGIN(co);
    TN_YIELD(co);
    yc_err = co->err;
    yc_done = 1;
    TN_END(co);
}

TEST(co_cancel_during_yield) {
    tn_loop *l = new_loop();
    tn_co c;
    tn_future *f;
    memset(&c, 0, sizeof c);
    yc_err = 1;
    yc_done = 0;
    f = tn_spawn(l, &c, yield_then_record);
    CHECK_EQ_INT(tn_future_cancel(f), 0);
    step_until_set(l, &yc_done, 100);
    CHECK_EQ_INT(yc_err, TN_ECANCELLED);
    tn_future_release(f);
    FREE_LOOP_CLEAN(l);
}

/* A cancelled coroutine that finishes with a value anyway: its future
 * stays cancelled and the owned value is freed, not leaked. */
static int stubborn(tn_co *co) {
    int *v;
    TN_BEGIN(co);
    TN_SLEEP(co, 60000);
    v = (int *)malloc(sizeof *v);
    if (!v) TN_FAIL(co, TN_ENOMEM);
    *v = 1;
    TN_RETURN_OWNED(co, v, count_free);
    TN_END(co);
}

TEST(co_cancelled_coroutine_returning_value_frees_it) {
    tn_loop *l = new_loop();
    tn_co *c = TN_CO_NEW(l, tn_co);
    tn_future *f;
    int i;
    REQUIRE(c != NULL);
    frees = 0;
    f = tn_spawn(l, c, stubborn);
    CHECK_EQ_INT(tn_future_cancel(f), 0);
    for (i = 0; i < 20 && live_coroutines(l); i++) CHECK_EQ_INT(tn_loop_step(l, 50), 0);
    CHECK_EQ_INT(live_coroutines(l), 0);
    CHECK_EQ_INT(frees, 1);
    CHECK_EQ_INT(tn_future_error(f), TN_ECANCELLED);
    tn_future_release(f);
    FREE_LOOP_CLEAN(l);
}

/* ------------------------------------------------------- frames, values */
static int owned_ret(tn_co *co) {
    int *v;
    TN_BEGIN(co);
    TN_YIELD(co);
    v = (int *)malloc(sizeof *v);
    if (!v) TN_FAIL(co, TN_ENOMEM);
    *v = 5;
    TN_RETURN_OWNED(co, v, count_free);
    TN_END(co);
}

TEST(co_return_owned_freed_when_not_taken) {
    tn_loop *l = new_loop();
    tn_co *c = TN_CO_NEW(l, tn_co);
    REQUIRE(c != NULL);
    frees = 0;
    CHECK_EQ_INT(tn_run_sync(l, tn_spawn(l, c, owned_ret), 0, NULL), 0);
    CHECK_EQ_INT(frees, 1);
    FREE_LOOP_CLEAN(l);
}

TEST(co_released_future_coroutine_still_runs_to_end) {
    tn_loop *l = new_loop();
    tn_co *c = TN_CO_NEW(l, tn_co);
    int i;
    REQUIRE(c != NULL);
    frees = 0;
    tn_future_release(tn_spawn(l, c, owned_ret)); /* fire and forget */
    CHECK_EQ_INT(live_coroutines(l), 1);
    for (i = 0; i < 10 && live_coroutines(l); i++) CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(live_coroutines(l), 0);
    CHECK_EQ_INT(frees, 1);
    FREE_LOOP_CLEAN(l);
}

struct loop_frame {
    tn_co co;
    int i, n;
};
static int sleeps_in_loop(tn_co *co) {
    struct loop_frame *f = (struct loop_frame *)co;
    TN_BEGIN(co);
    for (f->i = 0; f->i < 3; f->i++) {
        TN_SLEEP(co, 1);
        if (co->err) TN_FAIL(co, co->err);
        f->n++;
    }
    TN_RETURN(co, (void *)(intptr_t)f->n);
    TN_END(co);
}

TEST(co_new_frames_freed_and_counted) {
    tn_loop *l = new_loop();
    enum { N = 20 };
    tn_future *fs[N];
    void *values[N];
    int i, ok = 1;
    for (i = 0; i < N; i++) {
        struct loop_frame *f = TN_CO_NEW(l, struct loop_frame);
        REQUIRE(f != NULL);
        CHECK_EQ_INT(f->i, 0); /* zeroed */
        fs[i] = tn_spawn(l, &f->co, sleeps_in_loop);
    }
    CHECK_EQ_INT(live_coroutines(l), N);
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, N, values), 0, NULL), 0);
    for (i = 0; i < N; i++)
        if ((intptr_t)values[i] != 3) ok = 0;
    CHECK(ok);
    CHECK_EQ_INT(live_coroutines(l), 0);
    FREE_LOOP_CLEAN(l);
}

TEST(co_new_rejects_too_small) {
    tn_loop *l = new_loop();
    CHECK(tn_co_new(l, 1) == NULL);
    FREE_LOOP_CLEAN(l);
}

/* --------------------------------------------------------- composition */
struct val_frame {
    tn_co co;
    int v, delay;
};
static int val_after(tn_co *co) {
    struct val_frame *f = (struct val_frame *)co;
    TN_BEGIN(co);
    TN_SLEEP(co, (uint64_t)f->delay);
    if (co->err) TN_FAIL(co, co->err);
    if (f->v < 0) TN_FAIL(co, f->v);
    TN_RETURN(co, (void *)(intptr_t)f->v);
    TN_END(co);
}
static tn_future *spawn_val(tn_loop *l, int v, int delay) {
    struct val_frame *f = TN_CO_NEW(l, struct val_frame);
    REQUIRE(f != NULL);
    f->v = v;
    f->delay = delay;
    return tn_spawn(l, &f->co, val_after);
}

TEST(co_all_values_in_order) {
    tn_loop *l = new_loop();
    tn_future *fs[3];
    void *values[3];
    int i;
    for (i = 0; i < 3; i++) fs[i] = spawn_val(l, 100 + i, 3 - i); /* finish in reverse */
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, 3, values), 0, NULL), 0);
    for (i = 0; i < 3; i++) CHECK_EQ_INT((intptr_t)values[i], 100 + i);
    FREE_LOOP_CLEAN(l);
}

static int any_errs[3], any_resumed;
struct any_frame {
    tn_co co;
    int id, delay;
};
static int any_member(tn_co *co) {
    struct any_frame *f = (struct any_frame *)co;
    TN_BEGIN(co);
    TN_SLEEP(co, (uint64_t)f->delay);
    any_errs[f->id] = co->err;
    any_resumed++;
    if (co->err) TN_FAIL(co, co->err);
    TN_RETURN(co, (void *)(intptr_t)(f->id + 1));
    TN_END(co);
}

TEST(co_any_first_wins_losers_cancelled) {
    tn_loop *l = new_loop();
    tn_future *fs[3];
    size_t idx = 9;
    void *v = NULL;
    int i;
    any_resumed = 0;
    for (i = 0; i < 3; i++) {
        struct any_frame *f = TN_CO_NEW(l, struct any_frame);
        REQUIRE(f != NULL);
        f->id = i;
        f->delay = i == 1 ? 1 : 60000;
        any_errs[i] = 1;
        fs[i] = tn_spawn(l, &f->co, any_member);
    }
    CHECK_EQ_INT(tn_run_sync(l, tn_any(l, fs, 3, &idx), 0, &v), 0);
    CHECK_EQ_INT(idx, 1);
    CHECK_EQ_INT((intptr_t)v, 2);
    for (i = 0; i < 20 && any_resumed < 3; i++) CHECK_EQ_INT(tn_loop_step(l, 50), 0);
    CHECK_EQ_INT(any_errs[1], 0);
    CHECK_EQ_INT(any_errs[0], TN_ECANCELLED);
    CHECK_EQ_INT(any_errs[2], TN_ECANCELLED);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0); /* tn_any's done callbacks let go of them */
    FREE_LOOP_CLEAN(l);
}

TEST(co_all_failure_cancels_sibling_coroutines) {
    tn_loop *l = new_loop();
    tn_future *fs[3];
    int i;
    fs[0] = spawn_val(l, 1, 60000);
    fs[1] = spawn_val(l, -EPIPE, 1); /* fails */
    fs[2] = spawn_val(l, 3, 60000);
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, 3, NULL), 0, NULL), -EPIPE);
    for (i = 0; i < 20 && live_coroutines(l); i++) CHECK_EQ_INT(tn_loop_step(l, 50), 0);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0); /* tn_all's done callbacks let go of them */
    FREE_LOOP_CLEAN(l); /* the cancelled siblings ended and freed their frames */
}

TEST(co_with_timeout_fast_coroutine) {
    tn_loop *l = new_loop();
    void *v = NULL;
    CHECK_EQ_INT(tn_run_sync(l, tn_with_timeout(l, spawn_val(l, 7, 1), 60000), 0, &v), 0);
    CHECK_EQ_INT((intptr_t)v, 7);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    FREE_LOOP_CLEAN(l);
}

/* A coroutine that composes for itself: awaits tn_with_timeout of a child
 * and of a slow sleep. */
struct comp_frame {
    tn_co co;
    int e1, e2;
    intptr_t v1;
};
static int composer(tn_co *co) {
    struct comp_frame *c = (struct comp_frame *)co;
    TN_BEGIN(co);
    TN_AWAIT(co, tn_with_timeout(co->loop, spawn_val(co->loop, 11, 1), 60000));
    c->e1 = co->err;
    c->v1 = (intptr_t)co->value;
    TN_AWAIT(co, tn_with_timeout(co->loop, tn_sleep(co->loop, 60000), 2));
    c->e2 = co->err;
    TN_END(co);
}

TEST(co_awaits_with_timeout_inside) {
    tn_loop *l = new_loop();
    struct comp_frame c;
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(tn_run_sync(l, tn_spawn(l, &c.co, composer), 0, NULL), 0);
    CHECK_EQ_INT(c.e1, 0);
    CHECK_EQ_INT(c.v1, 11);
    CHECK_EQ_INT(c.e2, TN_ETIMEOUT);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    FREE_LOOP_CLEAN(l);
}

/* -------------------------------------- cancellation is delivered once */
/* As asyncio and Tornado: cancelling a coroutine ends the await under way
 * with TN_ECANCELLED once; it may then await its cleanup (later awaits and
 * yields work normally), and its future still fails with TN_ECANCELLED
 * when it ends. */
struct yield_cancel_frame {
    tn_co co;
    int yield_err, await_err, cleanup_err, done;
};
static int co_yield_then_await(tn_co *co) {
    struct yield_cancel_frame *f = (struct yield_cancel_frame *)co;
    TN_BEGIN(co);
    TN_SLEEP(co, 10000);
    f->await_err = co->err;
    TN_SLEEP(co, 2);
    f->cleanup_err = co->err;
    TN_YIELD(co);
    f->yield_err = co->err; /* delivered already: 0 */
    f->done = 1;
    TN_END(co);
}
TEST(co_cancellation_is_delivered_once_then_cleanup_can_await) {
    tn_loop *l = new_loop();
    struct yield_cancel_frame f;
    tn_future *fut;
    int i;
    memset(&f, 0, sizeof f);
    fut = tn_spawn(l, &f.co, co_yield_then_await);
    REQUIRE(fut != NULL);
    CHECK_EQ_INT(tn_future_cancel(fut), 0);
    for (i = 0; i < 200 && !tn_future_done(fut); i++) CHECK_EQ_INT(tn_loop_step(l, 20), 0);
    REQUIRE(tn_future_done(fut));
    CHECK_EQ_INT(f.await_err, TN_ECANCELLED);
    CHECK_EQ_INT(f.cleanup_err, 0);
    CHECK_EQ_INT(f.yield_err, 0);
    CHECK_EQ_INT(f.done, 1);
    CHECK(TN_CANCELLED(&f.co));
    CHECK_EQ_INT(tn_future_error(fut), TN_ECANCELLED);
    tn_future_release(fut);
    FREE_LOOP_CLEAN(l);
}

#ifndef TN_CO_LABELS
/* With the portable continuation an await inside a switch of the user's
 * cannot resume (its case label went to that switch): the coroutine fails
 * with TN_ECORESUME instead of ending quietly with err 0. */
struct switch_frame {
    tn_co co;
    int which, after;
};
static int co_await_in_switch(tn_co *co) {
    struct switch_frame *f = (struct switch_frame *)co;
    TN_BEGIN(co);
    switch (f->which) {
    case 7:
        TN_SLEEP(co, 1);
        f->after = 1;
        break;
    default: break;
    }
    TN_END(co);
}
TEST(co_await_inside_a_switch_fails_with_ecoresume) {
    tn_loop *l = new_loop();
    struct switch_frame f;
    tn_future *fut;
    int i;
    memset(&f, 0, sizeof f);
    f.which = 7;
    fut = tn_spawn(l, &f.co, co_await_in_switch);
    REQUIRE(fut != NULL);
    for (i = 0; i < 100 && !tn_future_done(fut); i++) CHECK_EQ_INT(tn_loop_step(l, 10), 0);
    REQUIRE(tn_future_done(fut));
    CHECK_EQ_INT(tn_future_error(fut), TN_ECORESUME);
    CHECK_EQ_INT(f.after, 0);
    tn_future_release(fut);
    FREE_LOOP_CLEAN(l);
}
#endif
