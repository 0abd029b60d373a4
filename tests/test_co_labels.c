/* The coroutine macros in their other mode: TN_CO_LABELS (labels as values,
 * GCC/clang), where a switch of your own may enclose an await. The macros
 * are per translation unit, so this file alone uses that mode; test_co.c
 * covers the portable switch mode. */
#if defined(__GNUC__) || defined(__clang__)
#define TN_CO_LABELS 1
#endif
#include "../tornado.h"
#include "tn_test.h"

struct sw_frame {
    tn_co co;
    int i, trace[8], n;
};
/* Awaits and yields inside a switch of its own: only valid in this mode. */
static int switchy(tn_co *co) {
    struct sw_frame *f = (struct sw_frame *)co;
    TN_BEGIN(co);
    for (f->i = 0; f->i < 4; f->i++) {
        switch (f->i % 3) {
        case 0:
            TN_SLEEP(co, 1);
            f->trace[f->n++] = 100 + f->i;
            break;
        case 1:
            TN_YIELD(co);
            f->trace[f->n++] = 200 + f->i;
            break;
        default:
            /* clang-format off */
            TN_SLEEP(co, 0); TN_YIELD(co); /* two on one line */
            /* clang-format on */
            f->trace[f->n++] = 300 + f->i;
            break;
        }
    }
    TN_RETURN(co, (void *)(intptr_t)f->n);
    TN_END(co);
}

TEST(co_labels_await_inside_own_switch) {
    tn_loop *l = new_loop();
    struct sw_frame f;
    void *v = NULL;
    static const int want[4] = {100, 201, 302, 103};
    int i;
    memset(&f, 0, sizeof f);
    CHECK_EQ_INT(tn_run_sync(l, tn_spawn(l, &f.co, switchy), 0, &v), 0);
    CHECK_EQ_INT((intptr_t)v, 4);
    REQUIRE(f.n == 4);
    for (i = 0; i < 4; i++) CHECK_EQ_INT(f.trace[i], want[i]);
    FREE_LOOP_CLEAN(l);
}

static int flag;
static void set_flag(tn_loop *l, void *arg) {
    (void)l;
    (void)arg;
    flag = 1;
}
struct wait_frame {
    tn_co co;
    int err;
};
static int waits(tn_co *co) {
    struct wait_frame *w = (struct wait_frame *)co;
    TN_BEGIN(co);
    TN_WAIT_UNTIL(co, flag);
    w->err = co->err;
    TN_END(co);
}

TEST(co_labels_wait_until_and_cancel) {
    tn_loop *l = new_loop();
    struct wait_frame *w = TN_CO_NEW(l, struct wait_frame);
    struct wait_frame w2;
    tn_future *f;
    int i;
    REQUIRE(w != NULL);
    flag = 0;
    CHECK_EQ_INT(tn_call_later(l, 1, set_flag, NULL, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_spawn(l, &w->co, waits), 0, NULL), 0);
    CHECK_EQ_INT(flag, 1);
    flag = 0;
    memset(&w2, 0, sizeof w2);
    w2.err = 1;
    f = tn_spawn(l, &w2.co, waits);
    CHECK_EQ_INT(tn_future_cancel(f), 0);
    for (i = 0; i < 10 && w2.err == 1; i++) CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    CHECK_EQ_INT(w2.err, TN_ECANCELLED);
    tn_future_release(f);
    FREE_LOOP_CLEAN(l);
}
