/* timers: call_later, call_at, a periodic callback, a cancelled timer and a
 * signal, on one loop. Prints what fires, in order, then exits. */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"

#include <signal.h>
#include <stdio.h>

static int ticks;
static tn_timer periodic;

static void say(tn_loop *loop, void *arg) {
    printf("%5llu ms  %s\n", (unsigned long long)tn_time_ms(loop), (const char *)arg);
}

static void tick(tn_loop *loop, void *arg) {
    (void)arg;
    printf("%5llu ms  tick %d\n", (unsigned long long)tn_time_ms(loop), ++ticks);
    if (ticks == 5) {
        tn_cancel_timer(loop, periodic); /* a periodic may cancel itself */
        raise(SIGUSR1);                  /* delivered as a loop callback below */
    }
}

static void on_usr1(tn_loop *loop, int signo, void *arg) {
    (void)arg;
    printf("%5llu ms  signal %d, stopping\n", (unsigned long long)tn_time_ms(loop), signo);
    tn_loop_stop(loop);
}

int main(void) {
    tn_loop *loop;
    tn_timer never;
    if (tn_loop_new(&loop, NULL)) return 1;
    tn_call_later(loop, 150, say, "call_later(150)", NULL);
    tn_call_later(loop, 50, say, "call_later(50)", NULL);
    tn_call_at(loop, tn_time_ms(loop) + 100, say, "call_at(now + 100)", NULL);
    tn_call_later(loop, 120, say, "never printed: cancelled", &never);
    tn_cancel_timer(loop, never);
    tn_call_every(loop, 100, tick, NULL, &periodic);
    tn_add_callback(loop, say, "add_callback: next iteration, before any timer");
    tn_signal_add(loop, SIGUSR1, on_usr1, NULL);
    tn_loop_run(loop);
    tn_loop_free(loop);
    return 0;
}
