/* failinject.c: allocation-failure injection for tornado.h.
 *
 * TN_MALLOC and TN_REALLOC go to counting wrappers that return NULL at the
 * N-th call (mode "single"), or at the N-th and every later one (mode
 * "persist": memory exhausted for good). One workload, in one process on
 * one tn_loop over loopback sockets, touches the whole library: callbacks,
 * timers, periodic timers, futures and the combinators, coroutines (spawn,
 * await, yield, wait, cancel), the executor (inline: TN_NO_THREADS), events
 * and queues, TCP streams, an HTTP server with plain and coroutine routes
 * (keep-alive, pipelining, Content-Length, chunked and streamed request
 * bodies, a streamed response with tn_http_drain, 302, 404, 413, graceful
 * shutdown) and the HTTP client fetching from it. The workload checks every
 * error return and treats each failure as an acceptable outcome: it only
 * has to end and leave nothing behind. It ends by freeing everything.
 *
 * Built with ASan+UBSan (LeakSanitizer on) and without free lists or pools,
 * so that every allocation is a real one and every leak is seen.
 *
 * Usage:
 *   failinject                  the driver: counts the allocations of a run
 *                               without failure (K), then runs the workload
 *                               once per N in 1..K in a forked child with the
 *                               N-th allocation failing (single mode), then
 *                               with every allocation from N on failing for
 *                               N in 1..K step S (persist mode); a child
 *                               passes if it exits 0 before its alarm,
 *                               printed its end mark, no sanitizer said
 *                               anything, nothing was left counted in
 *                               tn_loop_get_stats at tn_loop_free (a leak
 *                               LSan cannot see: still pointed to), and no
 *                               answer went to the wrong request (pipelined
 *                               answers, and 200 bodies, are checked in every
 *                               run). The run without failure must also meet
 *                               every expected status, so the workload cannot
 *                               quietly stop exercising what it claims to.
 *                               Failures are grouped by kind, each re-run
 *                               once with the injected failure's stack.
 *     -j JOBS        children at a time (2)
 *     -t SECONDS     a child's alarm (10)
 *     -s STRIDE      persist mode's step (K/300, at least 1; 0: skip it)
 *     -m MODE        single, persist or both (both)
 *     -n A-B         only N in A..B
 *   failinject --run N [--persist]   one run in this process, no fork (N 0:
 *                               no failure); FI_TRACE=1 prints the stack of
 *                               each injected failure (needs ASan),
 *                               FI_VERBOSE=1 what each step got.
 * Exit status: 0 if every run passed.
 */
#define _GNU_SOURCE 1
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * The counting allocator
 * ---------------------------------------------------------------------- */
static unsigned long fi_calls;   /* TN_MALLOC + TN_REALLOC calls so far */
static unsigned long fi_fail_at; /* 0: never */
static int fi_persist;           /* fail every call from fi_fail_at on */
static int fi_trace;
static int fi_verbose; /* FI_VERBOSE=1: what each step got */
static unsigned long fi_failed;  /* calls that returned NULL */

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FI_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FI_ASAN 1
#endif
#ifdef FI_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

static int fi_should_fail(size_t sz) {
    unsigned long n = ++fi_calls;
    (void)sz;
    if (!fi_fail_at) return 0;
    if (n == fi_fail_at || (fi_persist && n > fi_fail_at)) {
        fi_failed++;
        if (fi_trace && (n == fi_fail_at || fi_failed <= 3)) {
            fprintf(stderr, "failinject: allocation %lu (%zu bytes) fails here:\n", n, sz);
#ifdef FI_ASAN
            __sanitizer_print_stack_trace();
#endif
        }
        return 1;
    }
    return 0;
}
static void *fi_malloc(size_t sz) { return fi_should_fail(sz) ? NULL : malloc(sz); }
static void *fi_realloc(void *p, size_t sz) { return fi_should_fail(sz) ? NULL : realloc(p, sz); }

#define TN_MALLOC(sz) fi_malloc(sz)
#define TN_REALLOC(p, sz) fi_realloc((p), (sz))
#define TN_FREE(p) free(p)
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * The workload
 * ---------------------------------------------------------------------- */
static tn_loop *L;
static const char *volatile fi_phase = "start"; /* for the alarm's report */

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* In the run without failure (only), what each step got is checked, so the
 * harness cannot quietly stop exercising what it claims to (a broken route,
 * a request that never reaches the server). */
static int fi_unexpected;
static uint64_t fi_t0;
static void expect(int ok, const char *what, long got) {
    if (fi_verbose) fprintf(stderr, "  %s: %ld%s\n", what, got, ok ? "" : "  <- unexpected");
    if (ok || fi_fail_at) return;
    fi_unexpected++;
    fprintf(stderr, "failinject: expectation failed in the run without failure: %s (got %ld)\n", what, got);
}

/* Steps the loop until *flag reaches want, or ms pass. */
static void step_until(const int *flag, int want, unsigned ms) {
    uint64_t end = now_ms() + ms;
    while ((!flag || *flag < want) && now_ms() < end) tn_loop_step(L, 5);
}

/* A phase: a coroutine run to its end with tn_run_sync. Frames are static
 * (one per phase, never reused), so a coroutine that outlives its
 * tn_run_sync (cancelled, still unwinding) never touches a dead frame. */
static int run_phase(const char *name, tn_co *co, tn_co_fn fn, unsigned timeout_ms) {
    void *v = NULL;
    int err;
    fi_phase = name;
    err = tn_run_sync(L, tn_spawn(L, co, fn), timeout_ms, &v);
    (void)v; /* phases return no value */
    if (fi_verbose)
        fprintf(stderr, "phase %s: %s (%lu allocations so far, at %llu ms)\n", name, tn_strerror(err), fi_calls,
                (unsigned long long)(now_ms() - fi_t0));
    expect(err == 0, name, err);
    return err;
}

/* --- 1. loop basics ---------------------------------------------------- */
static int cb_runs, timer_runs, every_runs, cb_expected, timer_expected;
static tn_timer every_timer;
static void on_cb(tn_loop *l, void *arg) {
    (void)l;
    (void)arg;
    cb_runs++;
}
static void on_timer(tn_loop *l, void *arg) {
    (void)l;
    (void)arg;
    timer_runs++;
}
static void on_every(tn_loop *l, void *arg) {
    (void)arg;
    if (++every_runs == 3) tn_cancel_timer(l, every_timer);
}
static int sig_got;
static void on_sig(tn_loop *l, int signo, void *arg) {
    (void)l;
    (void)arg;
    if (signo == SIGUSR1) sig_got++;
}
static void phase_loop(void) {
    tn_timer t1 = 0, t2 = 0;
    int i, every_ok, rc;
    fi_phase = "loop";
    for (i = 0; i < 3; i++)
        if (tn_add_callback(L, on_cb, NULL) == 0) cb_expected++;
    if (tn_call_later(L, 1, on_timer, NULL, &t1) == 0) timer_expected++;
    if (tn_call_later(L, 1000, on_timer, NULL, &t2) == 0) tn_cancel_timer(L, t2); /* never runs */
    if (tn_call_at(L, tn_time_ms(L) + 2, on_timer, NULL, NULL) == 0) timer_expected++;
    every_ok = tn_call_every(L, 2, on_every, NULL, &every_timer) == 0;
    step_until(&cb_runs, cb_expected, 200);
    step_until(&timer_runs, timer_expected, 200);
    if (every_ok) {
        step_until(&every_runs, 3, 300);
        tn_cancel_timer(L, every_timer); /* TN_ENOENT once it cancelled itself */
    }
    expect(cb_runs == 3 && timer_runs == 2 && every_runs == 3, "callbacks+timers+periodic", cb_runs * 100 + timer_runs * 10 + every_runs);
    (void)t1;
    /* A signal, delivered as a loop callback (only raised once routed:
     * SIGUSR1's default action would end the process). */
    fi_phase = "signal";
    if ((rc = tn_signal_add(L, SIGUSR1, on_sig, NULL)) == 0) {
        raise(SIGUSR1);
        step_until(&sig_got, 1, 300);
        tn_signal_remove(L, SIGUSR1);
    }
    expect(rc == 0 && sig_got == 1, "signal", rc ? rc : sig_got);
}

/* --- 2. futures and combinators ----------------------------------------- */
static int done_cb_ran;
static void on_done_release(tn_future *f, void *arg) {
    (void)arg;
    done_cb_ran++;
    tn_future_release(f);
}
static void on_cancel_fail(tn_future *f, void *arg) {
    (void)arg;
    tn_future_fail(f, TN_ECANCELLED); /* the producer's part ends */
}
static int work_fn(void *arg, void **result) {
    char *s = (char *)malloc(16); /* the workload's own memory: not counted */
    (void)arg;
    if (!s) return TN_ENOMEM;
    strcpy(s, "work");
    *result = s;
    return 0;
}

/* More done callbacks queued at once than the loop's callback ring holds
 * (64), so that the ring grows while futures complete. */
#define BURST 80
static tn_future *burst[BURST];
static int burst_expected;

struct fut_frame {
    tn_co co;
    tn_future *f[3];
    void *v[3];
    size_t idx;
    tn_future *p;
    int i;
};
static struct fut_frame fut_fr;

static int fut_co(tn_co *co) {
    struct fut_frame *s = (struct fut_frame *)co;
    TN_BEGIN(co);
    /* A resolved future with an owned value, awaited: the value is ours. */
    s->p = tn_future_new(co->loop);
    if (s->p) {
        char *val = (char *)malloc(8);
        if (val) tn_future_resolve_owned(s->p, val, free);
        else tn_future_fail(s->p, TN_ENOMEM);
    }
    TN_AWAIT(co, s->p);
    if (co->err == 0) free(co->value);
    /* Owned value never taken: the future frees it. */
    s->p = tn_future_new(co->loop);
    if (s->p) {
        char *val = (char *)malloc(8);
        if (val) tn_future_resolve_owned(s->p, val, free);
        else tn_future_fail(s->p, TN_ENOMEM);
        tn_future_release(s->p);
    }
    /* Released while pending, then resolved by its producer. */
    s->p = tn_future_new(co->loop);
    if (s->p) {
        tn_future_release(s->p);
        tn_future_resolve(s->p, NULL);
    }
    /* Cancelled: the producer hears it and ends its part. */
    s->p = tn_future_new(co->loop);
    if (s->p) {
        tn_future_on_cancel(s->p, on_cancel_fail, NULL);
        tn_future_cancel(s->p);
        tn_future_release(s->p);
    }
    /* on_done with a plain callback. */
    done_cb_ran = 0;
    s->p = tn_sleep(co->loop, 1);
    if (s->p && tn_future_on_done(s->p, on_done_release, NULL) == 0) {
        TN_WAIT_UNTIL(co, done_cb_ran);
        if (co->err) TN_FAIL(co, co->err);
    }
    /* The burst: BURST futures with done callbacks, resolved in a row. */
    done_cb_ran = 0;
    burst_expected = 0;
    for (s->i = 0; s->i < BURST; s->i++) {
        burst[s->i] = tn_future_new(co->loop);
        if (burst[s->i]) {
            tn_future_on_done(burst[s->i], on_done_release, NULL);
            burst_expected++;
        }
    }
    for (s->i = 0; s->i < BURST; s->i++)
        if (burst[s->i]) tn_future_resolve(burst[s->i], NULL);
    /* Every callback runs on a later iteration: wait (boundedly) for them.
     * A lost one leaves its future (never freed) and shows as a leak. */
    for (s->i = 0; s->i < 100 && done_cb_ran < burst_expected; s->i++) {
        TN_YIELD(co); /* (with the callback ring full: its growth must not be needed) */
        if (co->err == TN_ECANCELLED) TN_FAIL(co, co->err);
    }
    expect(done_cb_ran == BURST, "burst of done callbacks", done_cb_ran);
    /* tn_all of two sleeps. */
    s->f[0] = tn_sleep(co->loop, 1);
    s->f[1] = tn_sleep(co->loop, 2);
    TN_AWAIT(co, tn_all(co->loop, s->f, 2, s->v));
    expect(co->err == 0, "tn_all", co->err);
    if (co->err == TN_ECANCELLED) TN_FAIL(co, co->err);
    /* tn_all with a failing input: the other is cancelled. */
    s->f[0] = tn_sleep(co->loop, 1000);
    s->f[1] = tn_future_new(co->loop);
    if (s->f[1]) tn_future_fail(s->f[1], TN_EINVAL);
    TN_AWAIT(co, tn_all(co->loop, s->f, 2, NULL));
    expect(co->err == TN_EINVAL, "tn_all with a failed input", co->err);
    if (co->err == TN_ECANCELLED) TN_FAIL(co, co->err);
    /* tn_any: the quick one wins, the slow ones are cancelled. */
    s->f[0] = tn_sleep(co->loop, 1);
    s->f[1] = tn_sleep(co->loop, 1000);
    s->f[2] = tn_sleep(co->loop, 1000);
    TN_AWAIT(co, tn_any(co->loop, s->f, 3, &s->idx));
    expect(co->err == 0 && s->idx == 0, "tn_any", co->err);
    if (co->err == TN_ECANCELLED) TN_FAIL(co, co->err);
    /* tn_with_timeout: times out (the sleep is cancelled), then does not. */
    TN_AWAIT(co, tn_with_timeout(co->loop, tn_sleep(co->loop, 1000), 2));
    expect(co->err == TN_ETIMEOUT, "tn_with_timeout (times out)", co->err);
    if (co->err == TN_ECANCELLED) TN_FAIL(co, co->err);
    TN_AWAIT(co, tn_with_timeout(co->loop, tn_sleep(co->loop, 1), 1000));
    expect(co->err == 0, "tn_with_timeout (in time)", co->err);
    if (co->err == TN_ECANCELLED) TN_FAIL(co, co->err);
    /* tn_with_timeout over tn_all: the README's shape. */
    s->f[0] = tn_sleep(co->loop, 1);
    s->f[1] = tn_sleep(co->loop, 1);
    TN_AWAIT(co, tn_with_timeout(co->loop, tn_all(co->loop, s->f, 2, s->v), 1000));
    expect(co->err == 0, "tn_with_timeout(tn_all)", co->err);
    if (co->err == TN_ECANCELLED) TN_FAIL(co, co->err);
    /* The executor (inline under TN_NO_THREADS). */
    TN_AWAIT(co, tn_run_in_executor(co->loop, work_fn, NULL, free));
    expect(co->err == 0, "tn_run_in_executor", co->err);
    if (co->err == 0) free(co->value);
    else if (co->err == TN_ECANCELLED) TN_FAIL(co, co->err);
    /* A sleep cancelled by its consumer. */
    s->p = tn_sleep(co->loop, 1000);
    if (s->p) {
        tn_future_cancel(s->p);
        tn_future_release(s->p);
    }
    TN_END(co);
}

/* --- 3. coroutines ------------------------------------------------------ */
struct child_frame {
    tn_co co;
    unsigned ms;
};
static int child_co(tn_co *co) {
    struct child_frame *s = (struct child_frame *)co;
    char *val;
    TN_BEGIN(co);
    TN_SLEEP(co, s->ms);
    if (co->err) TN_FAIL(co, co->err);
    val = (char *)malloc(4);
    if (!val) TN_FAIL(co, TN_ENOMEM);
    TN_RETURN_OWNED(co, val, free);
    TN_END(co);
}

static int flag_set;
static void set_flag(tn_loop *l, void *arg) {
    (void)l;
    (void)arg;
    flag_set = 1;
}

struct co_frame {
    tn_co co;
    tn_future *f;
    struct child_frame *c;
};
static struct co_frame co_fr;
static struct child_frame stack_child; /* a frame that is not tn_co_new's */

static int co_co(tn_co *co) {
    struct co_frame *s = (struct co_frame *)co;
    TN_BEGIN(co);
    /* A child on a runtime frame, awaited: its value is ours. */
    s->c = TN_CO_NEW(co->loop, struct child_frame);
    if (s->c) s->c->ms = 1;
    TN_AWAIT(co, s->c ? tn_spawn(co->loop, &s->c->co, child_co) : NULL);
    expect(co->err == 0, "child coroutine", co->err);
    if (co->err == 0) free(co->value);
    else if (co->err == TN_ECANCELLED) TN_FAIL(co, co->err);
    /* A child on our own frame, cancelled while it sleeps. */
    memset(&stack_child, 0, sizeof stack_child);
    stack_child.ms = 10000;
    s->f = tn_spawn(co->loop, &stack_child.co, child_co);
    TN_YIELD(co);
    if (s->f) tn_future_cancel(s->f);
    TN_AWAIT(co, s->f); /* do not leave while the child still uses stack_child */
    expect(co->err == TN_ECANCELLED, "cancelled child", co->err);
    if (co->err == 0) free(co->value);
    if (TN_CANCELLED(co)) TN_FAIL(co, TN_ECANCELLED);
    /* A child released without being awaited: it runs to its end alone. */
    s->c = TN_CO_NEW(co->loop, struct child_frame);
    if (s->c) {
        s->c->ms = 1;
        tn_future_release(tn_spawn(co->loop, &s->c->co, child_co));
    }
    /* TN_WAIT_UNTIL a flag a timer sets. */
    flag_set = 0;
    if (tn_call_later(co->loop, 2, set_flag, NULL, NULL) == 0) {
        TN_WAIT_UNTIL(co, flag_set);
        if (co->err) TN_FAIL(co, co->err);
    }
    TN_SLEEP(co, 3); /* the released child ends meanwhile */
    if (co->err == TN_ECANCELLED) TN_FAIL(co, co->err);
    TN_END(co);
}

/* --- 4. tn_event and tn_queue ------------------------------------------ */
static tn_event *ev;
static tn_queue *q;
static int items[3];

struct waiter_frame {
    tn_co co;
};
static int waiter_co(tn_co *co) {
    TN_BEGIN(co);
    TN_AWAIT(co, tn_event_wait(ev));
    if (co->err) TN_FAIL(co, co->err);
    TN_END(co);
}

struct consumer_frame {
    tn_co co;
    int got;
};
static int consumer_co(tn_co *co) {
    struct consumer_frame *s = (struct consumer_frame *)co;
    TN_BEGIN(co);
    for (s->got = 0; s->got < 3; s->got++) {
        TN_AWAIT(co, tn_with_timeout(co->loop, tn_queue_get(q), 300));
        if (co->err) TN_FAIL(co, co->err);
        tn_queue_task_done(q);
    }
    TN_END(co);
}

struct locks_frame {
    tn_co co;
    tn_future *w, *c, *pending;
    int i;
};
static struct locks_frame locks_fr;
static struct waiter_frame waiter_fr;
static struct consumer_frame consumer_fr;

static int locks_co(tn_co *co) {
    struct locks_frame *s = (struct locks_frame *)co;
    void *item;
    TN_BEGIN(co);
    ev = tn_event_new(co->loop);
    if (ev) {
        s->w = tn_spawn(co->loop, &waiter_fr.co, waiter_co);
        TN_YIELD(co);
        tn_event_set(ev);
        TN_AWAIT(co, s->w);
        expect(co->err == 0, "event waiter", co->err);
        tn_event_clear(ev);
        s->pending = tn_event_wait(ev); /* pending when the event goes */
        tn_event_free(ev);
        ev = NULL;
        TN_AWAIT(co, s->pending);
        expect(co->err == TN_ECANCELLED, "event freed under a waiter", co->err);
        if (TN_CANCELLED(co)) TN_FAIL(co, TN_ECANCELLED);
    }
    q = tn_queue_new(co->loop, 1);
    if (q) {
        if (tn_queue_try_put(q, &items[0]) == 0 && tn_queue_try_get(q, &item) == 0) tn_queue_task_done(q);
        s->c = tn_spawn(co->loop, &consumer_fr.co, consumer_co);
        for (s->i = 0; s->i < 3; s->i++) {
            TN_AWAIT(co, tn_with_timeout(co->loop, tn_queue_put(q, &items[s->i]), 300));
            if (co->err) break;
        }
        if (s->c && !co->err) {
            TN_AWAIT(co, tn_with_timeout(co->loop, tn_queue_join(q), 300));
            expect(co->err == 0, "queue join", co->err);
        }
        if (s->c) tn_future_cancel(s->c); /* if it still waits */
        TN_AWAIT(co, s->c);
        expect(co->err == 0, "queue consumer", co->err);
        /* a getter pending when the queue goes */
        s->pending = tn_queue_get(q);
        while (tn_queue_try_get(q, &item) == 0) {
        }
        tn_queue_free(q);
        q = NULL;
        TN_AWAIT(co, s->pending);
        expect(co->err == TN_ECANCELLED, "queue freed under a getter", co->err);
    }
    TN_END(co);
}

/* --- 5. TCP: tn_tcp_listen + an echo coroutine per accepted stream ------ */
static int echo_lfd = -1, echo_port;
struct echo_frame {
    tn_co co;
    tn_stream *st;
};
static int echo_co(tn_co *co) {
    struct echo_frame *s = (struct echo_frame *)co;
    TN_BEGIN(co);
    TN_AWAIT(co, tn_with_timeout(co->loop, tn_stream_read_until(s->st, "\n", 100), 1000));
    if (co->err == 0) {
        tn_bytes *b = (tn_bytes *)co->value;
        tn_future *w = tn_stream_write(s->st, b->data, b->len);
        tn_bytes_free(b);
        TN_AWAIT(co, w);
    }
    tn_stream_close(s->st);
    TN_END(co);
}
/* Each accepted stream gets an echo coroutine that runs alone (its future
 * released); a frame or a spawn that fails closes the stream. */
static void on_accept(tn_stream *st, void *arg) {
    struct echo_frame *s = TN_CO_NEW(L, struct echo_frame);
    tn_future *f;
    (void)arg;
    if (!s) {
        tn_stream_close(st);
        return;
    }
    s->st = st;
    f = tn_spawn(L, &s->co, echo_co);
    if (!f) tn_stream_close(st);
    tn_future_release(f);
}

struct tcp_frame {
    tn_co co;
    tn_stream *st;
};
static struct tcp_frame tcp_fr;
static int tcp_co(tn_co *co) {
    struct tcp_frame *s = (struct tcp_frame *)co;
    TN_BEGIN(co);
    TN_AWAIT(co, tn_tcp_connect(co->loop, "127.0.0.1", echo_port, 1000));
    expect(co->err == 0, "tcp connect", co->err);
    if (co->err) {
        if (TN_CANCELLED(co)) TN_FAIL(co, TN_ECANCELLED);
        TN_RETURN(co, NULL);
    }
    s->st = (tn_stream *)co->value;
    TN_AWAIT(co, tn_stream_write(s->st, "ping\n", 5));
    if (co->err == 0) {
        TN_AWAIT(co, tn_with_timeout(co->loop, tn_stream_read_until(s->st, "\n", 100), 1000));
        expect(co->err == 0 && ((tn_bytes *)co->value)->len == 5, "tcp echo", co->err);
        if (co->err == 0) tn_bytes_free(co->value);
    }
    tn_stream_close(s->st);
    s->st = NULL;
    TN_END(co);
}

/* --- 6. HTTP server ----------------------------------------------------- */
static tn_http_server *srv;
static tn_http_client *cli;
static int port, closed_port;
static char big[20000];

static void h_hello(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_set_header(req, "X-Hello", "1");
    tn_http_add_header(req, "Set-Cookie", "a=1");
    tn_http_add_header(req, "Set-Cookie", "b=2");
    tn_http_respond(req, 200, "text/plain", "hello\n", 6);
}
static void h_echo(tn_http_request *req, void *arg) {
    size_t len = 0;
    const char *body = tn_http_body(req, &len);
    (void)arg;
    tn_http_respond(req, 200, NULL, body ? body : "", body ? len : 0);
}
static void h_redirect(tn_http_request *req, void *arg) {
    if (tn_http_set_header(req, "Location", (const char *)arg) == 0) tn_http_respond(req, 302, NULL, "", 0);
    else tn_http_respond(req, 500, NULL, "", 0);
}
static void h_query(tn_http_request *req, void *arg) {
    const char *a = tn_http_query(req, "a");
    const char *h = tn_http_get_header(req, "X-Test");
    char out[128];
    int n = snprintf(out, sizeof out, "a=%s h=%s\n", a ? a : "-", h ? h : "-");
    (void)arg;
    if (!a) { /* every request here sends a=: NULL can only be out of memory */
        tn_http_respond(req, 503, NULL, "", 0);
        return;
    }
    tn_http_respond(req, 200, NULL, out, (size_t)n);
}
/* A body by reference: the server frees it (once), however it ends. */
static void h_ref(tn_http_request *req, void *arg) {
    char *body = (char *)malloc(1000);
    (void)arg;
    if (!body) {
        tn_http_respond(req, 500, NULL, "", 0);
        return;
    }
    memset(body, 'r', 1000);
    tn_http_respond_ref(req, 200, NULL, body, 1000, free, body);
}

/* A plain handler streaming three pieces; on a failed write it can only
 * return (the server then ends the response): the client must never take
 * the result for the whole body. */
#define PIECE 10000
static char pieces[3][PIECE];
static void h_pieces(tn_http_request *req, void *arg) {
    int i;
    (void)arg;
    if (tn_http_begin(req, 200, "application/octet-stream", -1)) return;
    for (i = 0; i < 3; i++)
        if (tn_http_write(req, pieces[i], PIECE)) return;
    tn_http_finish(req);
}

struct sleep_frame {
    tn_http_co h;
};
static int h_sleep(tn_co *co) {
    struct sleep_frame *f = (struct sleep_frame *)co;
    const char *ms;
    TN_BEGIN(co);
    ms = tn_http_param(f->h.req, "ms");
    TN_SLEEP(co, ms ? (uint64_t)atoi(ms) : 1);
    if (co->err) TN_FAIL(co, co->err);
    tn_http_respond(f->h.req, 200, NULL, "slept\n", 6);
    TN_END(co);
}

struct upload_frame {
    tn_http_co h;
    size_t len;
};
static int on_upload_body(tn_http_request *req, const char *data, size_t len, void *arg) {
    struct upload_frame *f = (struct upload_frame *)tn_http_frame(req);
    (void)data;
    (void)arg;
    if (f) f->len += len;
    return 0;
}
static int h_upload(tn_co *co) {
    struct upload_frame *f = (struct upload_frame *)co;
    char out[64];
    int n;
    TN_BEGIN(co);
    n = snprintf(out, sizeof out, "length=%zu\n", f->len);
    tn_http_respond(f->h.req, 200, NULL, out, (size_t)n);
    TN_END(co);
}

/* A streamed response: chunked pieces, a piece by reference, drains. */
struct stream_frame {
    tn_http_co h;
    int i;
};
static int h_stream(tn_co *co) {
    struct stream_frame *f = (struct stream_frame *)co;
    char *piece;
    TN_BEGIN(co);
    if (tn_http_begin(f->h.req, 200, "application/octet-stream", -1)) TN_FAIL(co, TN_ECLOSED);
    for (f->i = 0; f->i < 24; f->i++) {
        if (tn_http_write(f->h.req, big, 4096)) TN_FAIL(co, TN_ECLOSED);
        if (f->i % 6 == 5) {
            TN_AWAIT(co, tn_http_drain(f->h.req));
            if (co->err) TN_FAIL(co, co->err);
        }
    }
    if ((piece = (char *)malloc(100)) != NULL) {
        memset(piece, 'p', 100);
        if (tn_http_write_ref(f->h.req, piece, 100, free, piece)) TN_FAIL(co, TN_ECLOSED); /* freed either way */
    }
    tn_http_finish(f->h.req);
    TN_END(co);
}

static int routes_missing; /* routes that failed to register: 404 */
static int start_server(void) {
    tn_http_server_opts so;
    tn_http_route_opts o;
    memset(&so, 0, sizeof so);
    so.header_timeout_ms = 1000;
    so.body_timeout_ms = 1000;
    so.idle_timeout_ms = 1000;
    so.write_timeout_ms = 1000;
    so.linger_timeout_ms = 100;
    if (tn_http_server_new(L, &so, &srv)) {
        srv = NULL;
        return -1;
    }
    /* A route that fails to register is a 404 later: acceptable. */
    if (tn_http_route(srv, "GET", "/hello", h_hello, NULL, NULL)) routes_missing++;
    if (tn_http_route(srv, NULL, "/echo", h_echo, NULL, NULL)) routes_missing++;
    if (tn_http_route(srv, NULL, "/redirect", h_redirect, (void *)"/hello", NULL)) routes_missing++;
    if (tn_http_route(srv, "GET", "/loop", h_redirect, (void *)"/loop", NULL)) routes_missing++;
    if (tn_http_route(srv, "GET", "/query", h_query, NULL, NULL)) routes_missing++;
    if (tn_http_route(srv, "GET", "/ref", h_ref, NULL, NULL)) routes_missing++;
    if (tn_http_route(srv, "GET", "/pieces", h_pieces, NULL, NULL)) routes_missing++;
    memset(&o, 0, sizeof o);
    o.max_body_bytes = 16;
    if (tn_http_route(srv, "POST", "/small", h_echo, NULL, &o)) routes_missing++;
    memset(&o, 0, sizeof o);
    o.frame_size = sizeof(struct sleep_frame);
    if (tn_http_route_co(srv, "GET", "/sleep/{ms}", h_sleep, NULL, &o)) routes_missing++;
    memset(&o, 0, sizeof o);
    o.frame_size = sizeof(struct upload_frame);
    o.on_body = on_upload_body;
    o.max_body_bytes = 1 << 20;
    if (tn_http_route_co(srv, "POST", "/upload", h_upload, NULL, &o)) routes_missing++;
    memset(&o, 0, sizeof o);
    o.frame_size = sizeof(struct stream_frame);
    if (tn_http_route_co(srv, "GET", "/stream", h_stream, NULL, &o)) routes_missing++;
    if (tn_http_listen(srv, "127.0.0.1", 0)) return -1;
    port = tn_http_server_port(srv);
    return 0;
}

/* A port nobody listens on (for TN_EREFUSED). */
static int unused_port(void) {
    struct sockaddr_in a;
    socklen_t sl = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), p = 1;
    if (fd < 0) return 1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &sl) == 0)
        p = ntohs(a.sin_port);
    close(fd);
    return p;
}

/* --- 7. HTTP client, against that server -------------------------------- */
/* An answer that belongs to another request (a response dropped on a
 * keep-alive connection makes the next one stand in for it): not a memory
 * error, but a wrong answer; reported in every run, and the run fails. */
static void protocol_violation(const char *what, int status, const char *body, size_t len) {
    fprintf(stderr, "failinject: PROTOCOL: %s: got %d, %zu bytes \"%.*s%s\"\n", what, status, len,
            (int)(len > 40 ? 40 : len), body ? body : "", len > 40 ? "..." : "");
}

static char url_buf[4][128];
static const char *url(int i, const char *path) {
    snprintf(url_buf[i], sizeof url_buf[i], "http://127.0.0.1:%d%s", port, path);
    return url_buf[i];
}
static size_t chunk_bytes;
static int on_chunk(const char *data, size_t len, void *arg) {
    (void)data;
    (void)arg;
    chunk_bytes += len;
    return 0;
}
static const char *const req_headers[] = {"X-Test: yes", "Accept: */*", NULL};

/* The client's steps, in order; expect: the status, or the error. */
enum { B_NONE, B_SHORT, B_BIG, B_REF, B_100 };
struct fetch_step {
    const char *method, *path;
    int body, headers, chunks, max_redirects, refused;
    int expect;
    const char *body200; /* a 200's body must be this (in every run: else a response went astray) */
};
static const struct fetch_step steps[] = {
    {NULL, "/hello", B_NONE, 0, 0, 0, 0, 200, "hello\n"},
    {NULL, "/hello", B_NONE, 0, 0, 0, 0, 200, "hello\n"}, /* keep-alive: the pooled connection */
    {NULL, "/query?a=b%20c", B_NONE, 1, 0, 0, 0, 200, "a=b c h=yes\n"},
    {NULL, "/sleep/1", B_NONE, 0, 0, 0, 0, 200, "slept\n"},
    {"POST", "/echo", B_SHORT, 0, 0, 0, 0, 200, "hello, echo"}, /* a Content-Length body */
    {"PUT", "/echo", B_REF, 0, 0, 0, 0, 200, NULL},         /* a body by reference (body_free) */
    {"POST", "/upload", B_BIG, 0, 0, 0, 0, 200, NULL},      /* streamed to on_body */
    {NULL, "/stream", B_NONE, 0, 0, 0, 0, 200, NULL},       /* chunked, drained */
    {NULL, "/stream", B_NONE, 0, 1, 0, 0, 200, NULL},       /* the same to on_chunk */
    {NULL, "/ref", B_NONE, 0, 0, 0, 0, 200, NULL},          /* respond_ref */
    {NULL, "/pieces", B_NONE, 0, 0, 0, 0, 200, "(pieces)"}, /* a plain handler's chunked body */
    {NULL, "/redirect", B_NONE, 0, 0, 0, 0, 200, NULL},     /* 302, followed */
    {"POST", "/redirect", B_REF, 0, 0, 0, 0, 200, NULL},    /* 302 after POST: GET */
    {NULL, "/loop", B_NONE, 0, 0, 2, 0, TN_EREDIRECTS, NULL},
    {NULL, "/missing", B_NONE, 0, 0, 0, 0, 404, NULL},
    {"POST", "/small", B_100, 0, 0, 0, 0, 413, NULL},
    {"HEAD", "/hello", B_NONE, 0, 0, 0, 0, 200, NULL},
    {"DELETE", "/hello", B_NONE, 0, 0, 0, 0, 405, NULL},
    {NULL, "/hello", B_NONE, 0, 0, 0, 1, TN_EREFUSED, NULL},
};
#define NSTEPS (sizeof steps / sizeof steps[0])

static int body_ok(const char *want, const tn_http_response *r) {
    if (strcmp(want, "(pieces)") == 0)
        return r->body_len == 3 * PIECE && memcmp(r->body, pieces[0], PIECE) == 0 &&
               memcmp(r->body + PIECE, pieces[1], PIECE) == 0 && memcmp(r->body + 2 * PIECE, pieces[2], PIECE) == 0;
    return r->body_len == strlen(want) && memcmp(r->body, want, r->body_len) == 0;
}

static tn_future *start_fetch(const struct fetch_step *st) {
    tn_http_fetch_opts o;
    char u[128];
    memset(&o, 0, sizeof o);
    o.method = st->method;
    if (st->headers) o.headers = req_headers;
    if (st->chunks) o.on_chunk = on_chunk;
    o.max_redirects = st->max_redirects;
    switch (st->body) {
    case B_SHORT: o.body = "hello, echo"; o.body_len = 11; break;
    case B_BIG: o.body = big; o.body_len = sizeof big; break;
    case B_100: o.body = big; o.body_len = 100; break;
    case B_REF: {
        char *b = (char *)malloc(300); /* freed by the client, however the fetch ends */
        if (b) {
            memset(b, 'b', 300);
            o.body = b;
            o.body_len = 300;
            o.body_free = free;
        }
        break;
    }
    default: break;
    }
    if (st->refused) {
        snprintf(u, sizeof u, "http://127.0.0.1:%d%s", closed_port, st->path);
        return tn_http_fetch(cli, u, &o);
    }
    return tn_http_fetch(cli, url(0, st->path), &o);
}

struct client_frame {
    tn_co co;
    tn_future *f[3];
    void *v[3];
    size_t i;
};
static struct client_frame client_fr;

static int client_co(tn_co *co) {
    struct client_frame *s = (struct client_frame *)co;
    TN_BEGIN(co);
    for (s->i = 0; s->i < NSTEPS; s->i++) {
        TN_AWAIT(co, start_fetch(&steps[s->i]));
        {
            tn_http_response *r = (tn_http_response *)co->value;
            int got = co->err ? co->err : r->status;
            char what[80];
            snprintf(what, sizeof what, "fetch %s %s", steps[s->i].method ? steps[s->i].method : "GET",
                     steps[s->i].path);
            expect(got == steps[s->i].expect, what, got);
            if (co->err == 0 && r->status == 200 && steps[s->i].body200 && !body_ok(steps[s->i].body200, r))
                protocol_violation(what, r->status, r->body, r->body_len);
            if (co->err == 0) tn_http_response_free(r);
        }
        if (TN_CANCELLED(co)) TN_FAIL(co, TN_ECANCELLED);
    }
    /* concurrent fetches (two connections), with a timeout around them */
    s->f[0] = tn_http_fetch(cli, url(1, "/hello"), NULL);
    s->f[1] = tn_http_fetch(cli, url(2, "/sleep/2"), NULL);
    s->v[0] = s->v[1] = NULL;
    TN_AWAIT(co, tn_with_timeout(co->loop, tn_all(co->loop, s->f, 2, s->v), 2000));
    expect(co->err == 0, "concurrent fetches", co->err);
    if (co->err == 0) {
        tn_http_response_free(s->v[0]);
        tn_http_response_free(s->v[1]);
    }
    if (TN_CANCELLED(co)) TN_FAIL(co, TN_ECANCELLED);
    /* a fetch given up by tn_any (the slow one is cancelled mid-request) */
    s->f[0] = tn_http_fetch(cli, url(3, "/sleep/25"), NULL);
    s->f[1] = tn_sleep(co->loop, 5);
    TN_AWAIT(co, tn_any(co->loop, s->f, 2, NULL));
    expect(co->err == 0 && co->value == NULL, "fetch cancelled by tn_any", co->err);
    if (co->err == 0 && co->value) tn_http_response_free(co->value);
    if (TN_CANCELLED(co)) TN_FAIL(co, TN_ECANCELLED);
    TN_END(co);
}

/* --- 8. raw requests over tn_stream: pipelining, chunked bodies --------- */
struct raw_req {
    const char *bytes, *expect; /* the start of the answer, in the run without failure */
    const struct answer *answers; /* pipelined: every answer, checked in every run */
};
/* Pipelined requests whose answers all differ: answer i must be answer i,
 * or a 5xx (then the rest may be missing), in every run. The second batch
 * starts with a 404, answered before the connection has an output buffer. */
struct answer {
    int status;
    const char *body;
};
static const char pipe_check[] =
    "GET /query?a=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
    "GET /query?a=3 HTTP/1.1\r\nHost: x\r\n\r\n"
    "DELETE /hello HTTP/1.1\r\nHost: x\r\n\r\n"
    "GET /query?a=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
static const struct answer pipe_answers[] = {{200, "a=1 h=-\n"}, {404, "404 Not Found\n"}, {200, "a=3 h=-\n"},
                                             {405, "405 Method Not Allowed\n"}, {200, "a=5 h=-\n"}, {0, NULL}};
static const char pipe_check2[] =
    "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
    "GET /query?a=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
static const struct answer pipe_answers2[] = {{404, "404 Not Found\n"}, {200, "a=2 h=-\n"}, {0, NULL}};

static void check_pipelined(const char *buf, size_t len, const struct answer *want) {
    size_t off = 0, i, n = 0;
    char what[64];
    while (want[n].body) n++;
    for (i = 0; off < len; i++) {
        tn_http_message m;
        tn_http_header h[32];
        int rc = tn_http_parse_response(buf + off, len - off, 0, &m, h, 32, NULL, "GET");
        const char *body;
        size_t bl;
        snprintf(what, sizeof what, "pipelined answer %zu", i);
        if (rc == TN_EAGAIN) break; /* cut off: the connection closed */
        if (rc < 0) {
            protocol_violation(what, rc, buf + off, len - off);
            return;
        }
        if (m.content_length < 0) break;
        body = buf + off + rc;
        bl = (size_t)m.content_length;
        if (bl > len - off - (size_t)rc) break; /* cut off */
        off += (size_t)rc + bl;
        if (m.status >= 500) continue; /* the server gave up on this one: acceptable */
        if (m.status == 404 && routes_missing) continue; /* its route failed to register */
        if (i >= n) {
            protocol_violation("more answers than requests", m.status, body, bl);
            return;
        }
        if (m.status != want[i].status || bl != strlen(want[i].body) || memcmp(body, want[i].body, bl) != 0) {
            protocol_violation(what, m.status, body, bl);
            return;
        }
    }
    expect(i == n, "pipelined answers", (long)i);
}

static const struct raw_req raw_reqs[] = {
    {pipe_check, "HTTP/1.1 200", pipe_answers},
    {pipe_check2, "HTTP/1.1 404", pipe_answers2},
    {"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
     "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
     "GET /sleep/1 HTTP/1.1\r\nHost: x\r\n\r\n"
     "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
     "HTTP/1.1 200", NULL},
    {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
     "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
     "HTTP/1.1 200", NULL},
    {"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
     "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
     "HTTP/1.1 200", NULL},
    {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
     "hello",
     "HTTP/1.1 100", NULL},
    {"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n"
     "0123456789012345678901234567890123456789",
     "HTTP/1.1 413", NULL},
    {"GET /hello HTTP/1.0\r\n\r\n", "HTTP/1.0 200", NULL},
    {"BAD\x01 / HTTP/1.1\r\n\r\n", "HTTP/1.1 400", NULL},
};
#define NRAW (sizeof raw_reqs / sizeof raw_reqs[0])

struct raw_frame {
    tn_co co;
    tn_stream *st;
    size_t i;
};
static struct raw_frame raw_fr;

static int raw_co(tn_co *co) {
    struct raw_frame *s = (struct raw_frame *)co;
    TN_BEGIN(co);
    for (s->i = 0; s->i < NRAW; s->i++) {
        TN_AWAIT(co, tn_tcp_connect(co->loop, "127.0.0.1", port, 1000));
        if (co->err) {
            expect(0, "raw connect", co->err);
            if (TN_CANCELLED(co)) TN_FAIL(co, TN_ECANCELLED);
            continue;
        }
        s->st = (tn_stream *)co->value;
        TN_AWAIT(co, tn_stream_write(s->st, raw_reqs[s->i].bytes, strlen(raw_reqs[s->i].bytes)));
        if (co->err == 0) {
            TN_AWAIT(co, tn_with_timeout(co->loop, tn_stream_read_until_close(s->st, 1 << 20), 1500));
            {
                const char *want = raw_reqs[s->i].expect;
                tn_bytes *b = (tn_bytes *)co->value;
                char what[64];
                snprintf(what, sizeof what, "raw request %zu answer", s->i);
                expect(co->err == 0 && strncmp(b->data, want, strlen(want)) == 0, what, co->err);
                if (co->err == 0 && raw_reqs[s->i].answers) check_pipelined(b->data, b->len, raw_reqs[s->i].answers);
                if (co->err == 0) tn_bytes_free(b);
            }
        }
        tn_stream_close(s->st);
        s->st = NULL;
        if (TN_CANCELLED(co)) TN_FAIL(co, TN_ECANCELLED);
    }
    TN_END(co);
}

/* --- 9. graceful shutdown, with a request in flight --------------------- */
struct shut_frame {
    tn_co co;
    tn_future *f[2];
    void *v[2];
};
static struct shut_frame shut_fr;
static int shut_co(tn_co *co) {
    struct shut_frame *s = (struct shut_frame *)co;
    TN_BEGIN(co);
    s->f[0] = cli ? tn_http_fetch(cli, url(0, "/sleep/20"), NULL) : NULL;
    TN_SLEEP(co, 5); /* the request reaches its handler */
    s->f[1] = tn_http_server_shutdown(srv, 500);
    s->v[0] = s->v[1] = NULL;
    TN_AWAIT(co, tn_with_timeout(co->loop, tn_all(co->loop, s->f, 2, s->v), 1000));
    expect(co->err == 0 && s->v[0] && ((tn_http_response *)s->v[0])->status == 200, "shutdown with a request in flight",
           co->err);
    if (co->err == 0) tn_http_response_free(s->v[0]);
    if (co->err == TN_ECANCELLED) TN_FAIL(co, co->err);
    TN_END(co);
}

/* The whole workload. Returns 0 if it ran to its end (whatever failed). */
static int workload(void) {
    tn_loop_stats st;
    int i;
    memset(big, 'x', sizeof big);
    memset(pieces[0], 'a', PIECE);
    memset(pieces[1], 'b', PIECE);
    memset(pieces[2], 'c', PIECE);
    fi_t0 = now_ms();
    fi_phase = "tn_loop_new";
    if (tn_loop_new(&L, NULL)) return 0; /* nothing was made: a clean end */
    phase_loop();
    run_phase("futures", &fut_fr.co, fut_co, 3000);
    run_phase("coroutines", &co_fr.co, co_co, 3000);
    run_phase("event+queue", &locks_fr.co, locks_co, 3000);
    fi_phase = "tcp listen";
    if (tn_tcp_listen(L, "127.0.0.1", 0, on_accept, NULL, &echo_lfd, &echo_port) == 0) {
        run_phase("tcp", &tcp_fr.co, tcp_co, 3000);
        tn_tcp_unlisten(L, echo_lfd);
    } else {
        expect(0, "tcp listen", 0);
    }
    fi_phase = "server";
    closed_port = unused_port();
    if (start_server() == 0) {
        fi_phase = "client_new";
        if (tn_http_client_new(L, NULL, &cli) == 0) {
            tn_http_client_opts co;
            tn_http_client_free(cli); /* once with the defaults, freed unused */
            memset(&co, 0, sizeof co);
            co.connect_timeout_ms = 1000;
            co.request_timeout_ms = 1500;
            co.idle_timeout_ms = 1000;
            co.max_clients = 2;
            cli = NULL;
            if (tn_http_client_new(L, &co, &cli) == 0) run_phase("http client", &client_fr.co, client_co, 8000);
            else cli = NULL;
        }
        expect(cli != NULL, "client", 0);
        run_phase("raw streams", &raw_fr.co, raw_co, 8000);
        run_phase("shutdown", &shut_fr.co, shut_co, 2000);
    } else {
        expect(0, "server", 0);
    }
    fi_phase = "free";
    if (cli) tn_http_client_free(cli);
    cli = NULL;
    if (srv) tn_http_server_free(srv);
    srv = NULL;
    /* Let cancelled coroutines unwind (they may free the server). */
    for (i = 0; i < 200; i++) {
        tn_loop_get_stats(L, &st);
        if (!st.futures && !st.coroutines) break;
        tn_loop_step(L, 5);
    }
    tn_loop_get_stats(L, &st);
    if (st.futures || st.coroutines)
        fprintf(stderr, "failinject: left at tn_loop_free: futures=%zu coroutines=%zu timers=%zu handlers=%zu\n",
                st.futures, st.coroutines, st.timers, st.handlers);
    fi_phase = "tn_loop_free";
    tn_loop_free(L);
    L = NULL;
    return 0;
}

/* ------------------------------------------------------------------------
 * One run (the child)
 * ---------------------------------------------------------------------- */
#define FI_END_MARK "failinject: workload ended"

static void on_alarm(int sig) {
    char msg[160];
    int n = snprintf(msg, sizeof msg, "failinject: TIMEOUT (hang) in phase \"%s\" after %lu allocations\n",
                     fi_phase, fi_calls);
    (void)sig;
    if (n > 0) (void)!write(2, msg, (size_t)n);
#ifdef FI_ASAN
    __sanitizer_print_stack_trace(); /* where it hangs (not async-signal-safe: we are leaving anyway) */
#endif
    _exit(124);
}

static int run_one(unsigned long n, int persist, unsigned alarm_s) {
    fi_fail_at = n;
    fi_persist = persist;
    fi_calls = 0;
    fi_failed = 0;
    signal(SIGPIPE, SIG_IGN);
    if (alarm_s) {
        signal(SIGALRM, on_alarm);
        alarm(alarm_s);
    }
    workload();
    alarm(0);
    fprintf(stderr, FI_END_MARK " (%lu allocations, %lu failed, %d unexpected)\n", fi_calls, fi_failed,
            fi_unexpected);
    printf("allocations: %lu\n", fi_calls);
    fflush(stdout);
    return 0;
}

/* ------------------------------------------------------------------------
 * The driver
 * ---------------------------------------------------------------------- */
struct child {
    pid_t pid;
    unsigned long n;
    int persist;
    char path[64];
    uint64_t started;
};

struct result {
    unsigned long n;
    int persist;
    char why[64];
    char *out; /* the child's whole output */
    uint64_t ms;
};

static unsigned alarm_s = 10;
static const char *self_path;
static unsigned long passed[2], failed[2], ran[2];
static struct result *fails;
static size_t nfails, fails_cap;
static unsigned long slow_n[2][64];
static size_t nslow[2];

/* Forks one child whose output goes to a file. */
static int spawn_child(struct child *c, unsigned long n, int persist, int trace) {
    int fd;
    snprintf(c->path, sizeof c->path, "/tmp/failinject.%d.XXXXXX", (int)getpid());
    fd = mkstemp(c->path);
    if (fd < 0) {
        perror("mkstemp");
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    c->n = n;
    c->persist = persist;
    c->started = now_ms();
    c->pid = fork();
    if (c->pid < 0) {
        perror("fork");
        close(fd);
        unlink(c->path);
        return -1;
    }
    if (c->pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        setvbuf(stderr, NULL, _IONBF, 0);
        fi_trace = trace;
        run_one(n, persist, alarm_s);
        exit(0); /* LeakSanitizer runs at exit */
    }
    close(fd);
    return 0;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long len;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (char *)malloc((size_t)len + 1);
    if (buf) {
        len = (long)fread(buf, 1, (size_t)len, f);
        buf[len] = 0;
    }
    fclose(f);
    return buf;
}

/* Where a failed run's report starts: the sanitizer's first line, the
 * hang, or what was left at tn_loop_free. */
static const char *report_start(const char *out) {
    const char *keys[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "failinject: TIMEOUT",
                          "failinject: left", "failinject: PROTOCOL", "AddressSanitizer", "failinject: expectation", NULL};
    const char *p;
    int i;
    for (i = 0; keys[i]; i++)
        if ((p = strstr(out, keys[i])) != NULL) {
            while (p > out && p[-1] != '\n') p--;
            return p;
        }
    return out;
}

/* Prints up to max lines of s, each indented. */
static void print_lines(const char *s, int max, const char *indent) {
    int lines = 0;
    while (*s && lines < max) {
        const char *e = strchr(s, '\n');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        printf("%s%.*s\n", indent, (int)len, s);
        lines++;
        s += len + (e ? 1 : 0);
    }
}

static int run_passed(int status, const char *o) {
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 && strstr(o, FI_END_MARK) && !strstr(o, "Sanitizer") &&
           !strstr(o, "runtime error") && !strstr(o, "failinject: left") && !strstr(o, "failinject: PROTOCOL");
}

static void reap(struct child *c, int status) {
    char *out = read_file(c->path);
    const char *o = out ? out : "";
    int m = c->persist;
    uint64_t ms = now_ms() - c->started;
    unlink(c->path);
    ran[m]++;
    if (ms > 1000 && nslow[m] < 64) slow_n[m][nslow[m]++] = c->n;
    if (run_passed(status, o)) {
        passed[m]++;
        free(out);
        return;
    }
    {
        struct result r;
        failed[m]++;
        if (WIFSIGNALED(status)) snprintf(r.why, sizeof r.why, "killed by signal %d", WTERMSIG(status));
        else if (WIFEXITED(status) && WEXITSTATUS(status) == 124) snprintf(r.why, sizeof r.why, "hang (alarm)");
        else if (WIFEXITED(status) && WEXITSTATUS(status) == 23) snprintf(r.why, sizeof r.why, "leak (LeakSanitizer)");
        else if (strstr(o, "failinject: PROTOCOL")) snprintf(r.why, sizeof r.why, "wrong answer (protocol)");
        else if (strstr(o, "failinject: left")) snprintf(r.why, sizeof r.why, "left behind at tn_loop_free");
        else snprintf(r.why, sizeof r.why, "exit %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        r.n = c->n;
        r.persist = m;
        r.ms = ms;
        r.out = out;
        printf("FAIL %s N=%lu: %s (%llu ms)\n", m ? "persist" : "single", c->n, r.why, (unsigned long long)ms);
        print_lines(report_start(o), 8, "    ");
        fflush(stdout);
        if (nfails == fails_cap) {
            fails_cap = fails_cap ? fails_cap * 2 : 64;
            fails = (struct result *)realloc(fails, fails_cap * sizeof *fails);
            if (!fails) exit(2);
        }
        fails[nfails++] = r;
    }
}

/* Runs the workload for every N of the list, jobs at a time. */
static void run_all(const unsigned long *ns, size_t count, int persist, int jobs) {
    struct child *kids = (struct child *)calloc((size_t)jobs, sizeof *kids);
    size_t next = 0, running = 0, done = 0;
    int i;
    uint64_t t0 = now_ms(), last = t0;
    if (!kids) exit(2);
    while (done < count) {
        while (running < (size_t)jobs && next < count) {
            for (i = 0; i < jobs; i++)
                if (!kids[i].pid) break;
            if (spawn_child(&kids[i], ns[next], persist, 0) != 0) exit(2);
            next++;
            running++;
        }
        {
            int status;
            pid_t pid = waitpid(-1, &status, 0);
            if (pid < 0) {
                if (errno == EINTR) continue;
                perror("waitpid");
                exit(2);
            }
            for (i = 0; i < jobs; i++)
                if (kids[i].pid == pid) break;
            if (i == jobs) continue;
            reap(&kids[i], status);
            kids[i].pid = 0;
            running--;
            done++;
        }
        if (now_ms() - last >= 20000) {
            last = now_ms();
            printf("  ... %s: %zu/%zu done, %lu failed, %llu s\n", persist ? "persist" : "single", done, count,
                   failed[persist], (unsigned long long)((last - t0) / 1000));
            fflush(stdout);
        }
    }
    printf("failinject: %s mode: %zu runs in %llu s\n", persist ? "persist" : "single", count,
           (unsigned long long)((now_ms() - t0) / 1000));
    free(kids);
}

/* One run in a child, waited for; returns its output (and its status). */
static char *run_wait(unsigned long n, int persist, int trace, int *status) {
    struct child c;
    char *out;
    if (spawn_child(&c, n, persist, trace)) exit(2);
    if (waitpid(c.pid, status, 0) < 0) exit(2);
    out = read_file(c.path);
    unlink(c.path);
    return out ? out : (char *)calloc(1, 1);
}

/* The baseline: a run without failure, which must pass and meet every
 * expectation; returns K. */
static unsigned long baseline(void) {
    int status;
    char *out = run_wait(0, 0, 0, &status);
    const char *p;
    unsigned long k = 0;
    if (!run_passed(status, out) || strstr(out, "failinject: expectation")) {
        printf("failinject: the run without failure did not pass:\n%s\n", out);
        exit(1);
    }
    if ((p = strstr(out, "allocations: ")) != NULL) k = strtoul(p + 13, NULL, 10);
    free(out);
    return k;
}

/* The names of the first max tornado.h functions in the stack frames that
 * follow p ("#k 0x... in tn_xxx file:line"), as "fn file:line < fn ...". */
static void frames_after(const char *p, int max, char *out, size_t cap) {
    size_t o = 0;
    int got = 0;
    out[0] = 0;
    while (p && *p && got < max) {
        const char *e = strchr(p, '\n'), *in;
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) break; /* a blank line ends a stack */
        in = strstr(p, " in tn");
        if (in && in < p + len && strstr(p, "    #") == p) {
            const char *name = in + 4, *sp;
            const char *file = strstr(name, "tornado.h:");
            size_t nl;
            sp = strchr(name, ' ');
            nl = sp && sp < p + len ? (size_t)(sp - name) : (size_t)(p + len - name);
            if (file && file < p + len) {
                const char *fe = file;
                while (fe < p + len && *fe != ' ' && *fe != '\n') fe++;
                o += (size_t)snprintf(out + o, o < cap ? cap - o : 0, "%s%.*s (%.*s)", got ? " < " : "", (int)nl, name,
                                      (int)(fe - file), file);
            } else {
                o += (size_t)snprintf(out + o, o < cap ? cap - o : 0, "%s%.*s", got ? " < " : "", (int)nl, name);
            }
            if (o >= cap) break;
            got++;
        }
        p = e ? e + 1 : NULL;
    }
}

/* What a failure is, to group the N that fail the same way: the first
 * line of the report (numbers dropped) and the first tornado.h frames
 * after it. */
static void failure_key(const char *out, char *key, size_t cap) {
    const char *start = report_start(out), *e = strchr(start, '\n');
    char frames[400], line[200];
    size_t i, o = 0, len = e ? (size_t)(e - start) : strlen(start);
    const char *sum = strstr(out, "SUMMARY: ");
    {
        const char *cuts[] = {" on address", " at pc", " (pc", " on unknown address", NULL};
        int c;
        for (c = 0; cuts[c]; c++) {
            const char *x = strstr(start, cuts[c]);
            if (x && (size_t)(x - start) < len) len = (size_t)(x - start);
        }
    }
    for (i = 0; i < len && o + 1 < sizeof line; i++) {
        char ch = start[i];
        if (ch >= '0' && ch <= '9') continue;
        line[o++] = ch;
    }
    line[o] = 0;
    frames_after(e ? e + 1 : NULL, 2, frames, sizeof frames);
    if (sum && strstr(sum, "leaked")) {
        /* a leak: where the leaked block was allocated */
        const char *a = strstr(out, "allocated from:");
        frames_after(a ? strchr(a, '\n') + 1 : NULL, 3, frames, sizeof frames);
    }
    snprintf(key, cap, "%s | %s", line, frames);
}

struct group {
    char key[700];
    char site[700];  /* where the injected failure was */
    char why[64];
    unsigned long ns[32];
    int persist[32];
    size_t count;
    const struct result *first;
    char *trace; /* the traced re-run of the first N */
};

static void analyse_failures(void) {
    struct group *g = (struct group *)calloc(nfails ? nfails : 1, sizeof *g);
    size_t ng = 0, i, j;
    if (!g) return;
    printf("\n==== distinct failures ====\n");
    for (i = 0; i < nfails; i++) {
        char key[700];
        failure_key(fails[i].out ? fails[i].out : "", key, sizeof key);
        for (j = 0; j < ng; j++)
            if (strcmp(g[j].key, key) == 0) break;
        if (j == ng) {
            snprintf(g[ng].key, sizeof g[ng].key, "%s", key);
            snprintf(g[ng].why, sizeof g[ng].why, "%s", fails[i].why);
            g[ng].first = &fails[i];
            ng++;
        }
        if (g[j].count < 32) {
            g[j].ns[g[j].count] = fails[i].n;
            g[j].persist[g[j].count] = fails[i].persist;
        }
        g[j].count++;
    }
    for (j = 0; j < ng; j++) {
        int status;
        const char *site;
        size_t k;
        /* The first N again, with the injected failure's stack printed. */
        g[j].trace = run_wait(g[j].first->n, g[j].first->persist, 1, &status);
        site = strstr(g[j].trace, "fails here:");
        frames_after(site ? strchr(site, '\n') + 1 : NULL, 4, g[j].site, sizeof g[j].site);
        printf("\n[%zu] %s, %zu run(s): N =", j + 1, g[j].why, g[j].count);
        for (k = 0; k < g[j].count && k < 32; k++) printf(" %s%lu", g[j].persist[k] ? "p" : "", g[j].ns[k]);
        if (g[j].count > 32) printf(" ...");
        printf("\n    injected failure (N=%s%lu): %s\n", g[j].first->persist ? "p" : "", g[j].first->n,
               g[j].site[0] ? g[j].site : "(not reproduced with the trace on)");
        print_lines(report_start(g[j].first->out ? g[j].first->out : ""), 16, "    | ");
        free(g[j].trace);
    }
    printf("\n(p: persist mode. One run alone: FI_TRACE=1 %s --run N [--persist])\n", self_path);
    free(g);
}

static int cmp_result(const void *a, const void *b) {
    const struct result *x = (const struct result *)a, *y = (const struct result *)b;
    if (x->persist != y->persist) return x->persist - y->persist;
    return x->n < y->n ? -1 : x->n > y->n;
}

int main(int argc, char **argv) {
    int jobs = 2, i, do_single = 1, do_persist = 1;
    long stride = -1;
    unsigned long k, k2, k3, lo = 1, hi = 0, n, *ns;
    size_t count, j;
    uint64_t t0 = now_ms();
    self_path = argv[0];
    fi_trace = getenv("FI_TRACE") && strcmp(getenv("FI_TRACE"), "1") == 0;
    fi_verbose = getenv("FI_VERBOSE") && strcmp(getenv("FI_VERBOSE"), "1") == 0;
    if (argc >= 3 && strcmp(argv[1], "--run") == 0) {
        int persist = argc >= 4 && strcmp(argv[3], "--persist") == 0;
        return run_one(strtoul(argv[2], NULL, 10), persist, alarm_s);
    }
    for (i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (strcmp(a, "-j") == 0) jobs = atoi(v);
        else if (strcmp(a, "-t") == 0) alarm_s = (unsigned)atoi(v);
        else if (strcmp(a, "-s") == 0) stride = atol(v);
        else if (strcmp(a, "-m") == 0) {
            do_single = strcmp(v, "single") == 0 || strcmp(v, "both") == 0;
            do_persist = strcmp(v, "persist") == 0 || strcmp(v, "both") == 0;
            if (!do_single && !do_persist) goto usage;
        } else if (strcmp(a, "-n") == 0) {
            char *e;
            lo = strtoul(v, &e, 10);
            hi = *e == '-' ? strtoul(e + 1, NULL, 10) : lo;
        } else goto usage;
    }
    if (jobs < 1) jobs = 1;
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* The count must not depend on timing: three runs must agree (nearly). */
    k = baseline();
    k2 = baseline();
    k3 = baseline();
    printf("failinject: K = %lu allocations in a run without failure (three runs: %lu %lu %lu)\n", k, k, k2, k3);
    if (k2 > k) k = k2;
    if (k3 > k) k = k3;
    if (k == 0) {
        printf("failinject: no allocation counted?\n");
        return 1;
    }
    /* A little past K: a run whose sequence shifted may allocate more. */
    if (!hi) hi = k + 5;
    if (lo < 1) lo = 1;
    if (hi < lo) goto usage;
    ns = (unsigned long *)malloc((hi - lo + 1) * sizeof *ns);
    if (!ns) return 2;

    if (do_single) {
        count = 0;
        for (n = lo; n <= hi; n++) ns[count++] = n;
        printf("failinject: single mode (allocation N fails), N = %lu..%lu, %d at a time, alarm %u s\n", lo, hi,
               jobs, alarm_s);
        run_all(ns, count, 0, jobs);
    }
    if (do_persist) {
        if (stride < 0) stride = (long)(k / 300) > 0 ? (long)(k / 300) : 1;
        if (stride > 0) {
            count = 0;
            for (n = lo; n <= hi; n += (unsigned long)stride) ns[count++] = n;
            printf("failinject: persist mode (every allocation from N on fails), N = %lu..%lu step %ld\n", lo, hi,
                   stride);
            run_all(ns, count, 1, jobs);
        } else {
            do_persist = 0;
        }
    }
    free(ns);

    if (nfails) {
        qsort(fails, nfails, sizeof *fails, cmp_result);
        analyse_failures();
    }
    printf("\n==== failinject summary ====\n");
    printf("K = %lu allocations (three runs without failure: %lu %lu %lu)\n", k, k, k2, k3);
    if (do_single) printf("single:  %lu/%lu passed, %lu failed\n", passed[0], ran[0], failed[0]);
    if (do_persist) printf("persist: %lu/%lu passed, %lu failed (N step %ld)\n", passed[1], ran[1], failed[1], stride);
    for (i = 0; i < 2; i++) {
        if (!nslow[i]) continue;
        printf("%s: %zu run(s) took over 1 s (a timeout ended some wait):", i ? "persist" : "single", nslow[i]);
        for (j = 0; j < nslow[i]; j++) printf(" %lu", slow_n[i][j]);
        printf("\n");
    }
    if (nfails) {
        printf("failing N:");
        for (j = 0; j < nfails; j++) printf(" %s%lu", fails[j].persist ? "p" : "", fails[j].n);
        printf("\n");
        for (j = 0; j < nfails; j++) free(fails[j].out);
        free(fails);
    }
    printf("wall time: %llu s\n", (unsigned long long)((now_ms() - t0) / 1000));
    return nfails ? 1 : 0;
usage:
    fprintf(stderr,
            "usage: %s [-j JOBS] [-t SECONDS] [-s STRIDE] [-m single|persist|both] [-n A-B]\n"
            "       %s --run N [--persist]\n",
            argv[0], argv[0]);
    return 2;
}
