/* coroutines: sleep, all, with_timeout, and a CPU-heavy function moved to
 * the executor while the loop keeps serving a timer. */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"

#include <stdint.h>
#include <stdio.h>

/* Blocking work for a pool thread: a deliberately slow hash. */
static int slow_hash(void *arg, void **result) {
    uint64_t h = 1469598103934665603u, i, n = (uint64_t)(uintptr_t)arg;
    for (i = 0; i < n; i++) h = (h ^ (i & 0xff)) * 1099511628211u;
    *result = (void *)(uintptr_t)(h & 0xffffffffu);
    return 0;
}

static int beats;
static void heartbeat(tn_loop *loop, void *arg) {
    (void)arg;
    (void)loop;
    beats++;
}

/* Everything that must survive an await lives in the frame, never in
 * locals: a coroutine's locals are gone when it resumes. */
struct main_frame {
    tn_co co;
    tn_future *pair[2];
    void *values[2];
    tn_timer hb;
};

static int main_co(tn_co *co) {
    struct main_frame *f = (struct main_frame *)co;
    TN_BEGIN(co);

    TN_SLEEP(co, 50);
    printf("slept 50 ms\n");

    /* all: two sleeps at once take as long as the longer one */
    f->pair[0] = tn_sleep(co->loop, 80);
    f->pair[1] = tn_sleep(co->loop, 60);
    TN_AWAIT(co, tn_all(co->loop, f->pair, 2, f->values));
    printf("all: both done (err=%d)\n", co->err);

    /* with_timeout: a 1 s sleep cut off at 30 ms */
    TN_AWAIT(co, tn_with_timeout(co->loop, tn_sleep(co->loop, 1000), 30));
    printf("with_timeout: %s\n", tn_strerror(co->err));

    /* executor: the hash runs on a pool thread; the heartbeat keeps firing */
    tn_call_every(co->loop, 5, heartbeat, NULL, &f->hb);
    TN_AWAIT(co, tn_run_in_executor(co->loop, slow_hash, (void *)(uintptr_t)200000000u, NULL));
    tn_cancel_timer(co->loop, f->hb);
    printf("executor: hash %08lx, heartbeats meanwhile: %s\n", (unsigned long)(uintptr_t)co->value,
           beats > 0 ? "yes" : "no");
    TN_END(co);
}

int main(void) {
    tn_loop *loop;
    struct main_frame frame = {0};
    int err;
    if (tn_loop_new(&loop, NULL)) return 1;
    err = tn_run_sync(loop, tn_spawn(loop, &frame.co, main_co), 0, NULL);
    printf("done: %s\n", tn_strerror(err));
    tn_loop_free(loop);
    return err ? 1 : 0;
}
