/* bench/coremin.c: the core-only program of bench/counts.sh's text-size figure (loop, futures,
 * coroutines: one coroutine awaiting a 1 ms timer). Built with -DTN_NO_HTTP_SERVER
 * -DTN_NO_HTTP_CLIENT -DTN_NO_TCP -DTN_NO_EXECUTOR -DTN_NO_SIGNALS -DTN_NO_THREADS. */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"

static int sleeper(tn_co *co) {
    TN_BEGIN(co);
    TN_SLEEP(co, 1);
    TN_END(co);
}

int main(void) {
    static tn_co co;
    tn_loop *loop;
    int rc;
    if (tn_loop_new(&loop, NULL)) return 1;
    rc = tn_run_sync(loop, tn_spawn(loop, &co, sleeper), 1000, NULL);
    tn_loop_free(loop);
    return rc != 0;
}
