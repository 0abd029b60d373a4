/* tornado.h - Tornado's async model (event loop, futures, coroutines,
 * executor) for C, as one header.                     MIT licence: see the end.
 *
 * @@MANUAL@@
 */
#ifndef TORNADO_H
#define TORNADO_H

/* The implementation needs POSIX and Linux declarations (epoll, eventfd,
 * accept4): include tornado.h first in that one file, or define _GNU_SOURCE
 * before your first #include. */
#if defined(TORNADO_IMPLEMENTATION) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1
#endif

#include <stddef.h>
#include <stdint.h>

#ifndef TN_API
#define TN_API extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Errors. 0 is success. System errors are -errno (-1 .. -999); the library's
 * own are below -1000. tn_strerror() names both.
 * ---------------------------------------------------------------------- */
#define TN_OK          0
#define TN_ENOMEM      (-1001) /* TN_MALLOC returned NULL */
#define TN_EINVAL      (-1002) /* bad argument */
#define TN_ETIMEOUT    (-1003) /* a deadline passed */
#define TN_ECANCELLED  (-1004) /* the future was cancelled */
#define TN_ECLOSED     (-1005) /* the peer or the object was closed */
#define TN_EEXIST      (-1006) /* already registered */
#define TN_ENOENT      (-1007) /* not registered / no such item */
#define TN_EFULL       (-1008) /* queue full (try_put) */
#define TN_EEMPTY      (-1009) /* queue empty (try_get) */
#define TN_ESTATE      (-1010) /* wrong state: future already done, loop running */
#define TN_ENOTSUP     (-1011) /* not supported in this build */
#define TN_EAGAIN      (-1012) /* parser: incomplete, feed more bytes */
#define TN_ERESOLVE    (-1013) /* name resolution failed */
#define TN_EREFUSED    (-1014) /* connection refused */
/* HTTP message errors: each names the status a server answers with. */
#define TN_EMALFORMED  (-1100) /* 400 Bad Request (or a malformed response) */
#define TN_ETOOLARGE   (-1101) /* 413 Content Too Large */
#define TN_EURILONG    (-1102) /* 414 URI Too Long */
#define TN_EHEADERS    (-1103) /* 431 Request Header Fields Too Large */
#define TN_ENOTIMPL    (-1104) /* 501 Not Implemented */
#define TN_EVERSION    (-1105) /* 505 HTTP Version Not Supported */

/* Returns a static, human-readable string for any code above (or -errno). */
TN_API const char *tn_strerror(int err);

/* ------------------------------------------------------------------------
 * Event loop (Tornado's IOLoop)
 * ---------------------------------------------------------------------- */
typedef struct tn_loop tn_loop;
typedef struct tn_future tn_future;

/* Run-time options; a zeroed struct (or NULL) means every default. */
typedef struct tn_loop_opts {
    int executor_threads; /* 0: TN_EXECUTOR_THREADS; threads start on first use */
} tn_loop_opts;

typedef void (*tn_callback_fn)(tn_loop *loop, void *arg);

/* Creates a loop. *out receives it; the caller owns it and frees it with
 * tn_loop_free(). Returns 0, TN_ENOMEM or -errno (epoll/eventfd failed). */
TN_API int tn_loop_new(tn_loop **out, const tn_loop_opts *opts);
/* Frees the loop: stops and joins the executor, restores signal
 * dispositions, frees every pending callback, timer and future the loop still
 * tracks. fds registered with tn_add_handler are not closed (they are yours).
 * Must not be called while the loop is running. */
TN_API void tn_loop_free(tn_loop *loop);
/* The backend's name: "epoll" or "poll". */
TN_API const char *tn_loop_backend(const tn_loop *loop);

/* Runs until tn_loop_stop(). Returns 0, or TN_ESTATE if already running. */
TN_API int tn_loop_run(tn_loop *loop);
/* Makes tn_loop_run() return after the current iteration. Loop thread only;
 * from another thread, tn_add_callback_threadsafe() a callback that calls it.
 * A stop requested while the loop is not running makes the next run return
 * at once (as Tornado's IOLoop.stop()). */
TN_API void tn_loop_stop(tn_loop *loop);
/* One iteration for a loop driven by someone else's main loop: runs due
 * callbacks and timers, then waits at most max_wait_ms (0: do not block,
 * -1: as long as needed) for I/O and dispatches it. Returns 0 or -errno. */
TN_API int tn_loop_step(tn_loop *loop, int max_wait_ms);
/* Milliseconds until the loop has work: 0 if callbacks are pending, the time
 * to the next timer, or -1 if only I/O or a signal can wake it. */
TN_API int tn_loop_next_timeout(tn_loop *loop);
/* An fd that becomes readable when the loop has I/O to dispatch (the epoll
 * fd), for embedding in another poller; -1 with the poll backend. */
TN_API int tn_loop_fd(const tn_loop *loop);
/* The loop's cached monotonic clock, in ms (Tornado's IOLoop.time()). */
TN_API uint64_t tn_time_ms(const tn_loop *loop);

/* Counters of what the loop tracks: tests use them to prove nothing leaked. */
typedef struct tn_loop_stats {
    size_t handlers, timers, callbacks, futures, coroutines, jobs;
} tn_loop_stats;
TN_API void tn_loop_get_stats(const tn_loop *loop, tn_loop_stats *out);

/* --- fd watching (add_handler / update_handler / remove_handler) --- */
#define TN_READ  1u
#define TN_WRITE 2u
#define TN_ERROR 4u /* delivered only: hang-up or error on the fd */
typedef void (*tn_io_fn)(tn_loop *loop, int fd, unsigned events, void *arg);

/* Calls cb when fd is ready for `events` (TN_READ|TN_WRITE). Level-triggered.
 * The fd stays yours: remove it before you close it. Returns 0, TN_EEXIST,
 * TN_EINVAL or -errno. A callback may remove or close any fd, its own
 * included: an event already collected for a removed fd is never delivered,
 * even when the fd number is reused within the same batch. */
TN_API int tn_add_handler(tn_loop *loop, int fd, unsigned events, tn_io_fn cb, void *arg);
TN_API int tn_update_handler(tn_loop *loop, int fd, unsigned events);
TN_API int tn_remove_handler(tn_loop *loop, int fd);

/* --- callbacks --- */
/* Runs fn(loop, arg) on the next iteration, in FIFO order. 0 or TN_ENOMEM. */
TN_API int tn_add_callback(tn_loop *loop, tn_callback_fn fn, void *arg);
/* The same from any thread: wakes the loop (eventfd, or a self-pipe).
 * Without threads (TN_NO_THREADS) it is tn_add_callback. */
TN_API int tn_add_callback_threadsafe(tn_loop *loop, tn_callback_fn fn, void *arg);

/* --- timers (call_later / call_at / remove_timeout / PeriodicCallback) --- */
typedef uint64_t tn_timer; /* a handle; 0 is never a valid one */
/* fn(loop, arg) runs once delay_ms from now (call_at: at tn_time_ms() time
 * `when_ms`). *out (may be NULL) receives a handle for tn_cancel_timer.
 * Returns 0 or TN_ENOMEM. Timers due at the same time run in the order
 * they were scheduled. */
TN_API int tn_call_later(tn_loop *loop, uint64_t delay_ms, tn_callback_fn fn, void *arg, tn_timer *out);
TN_API int tn_call_at(tn_loop *loop, uint64_t when_ms, tn_callback_fn fn, void *arg, tn_timer *out);
/* Runs fn every interval_ms until cancelled. A run that is late skips the
 * missed ones (the next is the next multiple of the interval), as Tornado's
 * PeriodicCallback. */
TN_API int tn_call_every(tn_loop *loop, uint64_t interval_ms, tn_callback_fn fn, void *arg, tn_timer *out);
/* Cancels a pending timer. TN_ENOENT if it already ran or the handle is stale
 * (handles are never reused, so a stale one is harmless). */
TN_API int tn_cancel_timer(tn_loop *loop, tn_timer timer);

/* --- signals --- */
typedef void (*tn_signal_fn)(tn_loop *loop, int signo, void *arg);
/* Delivers signo to fn as a loop callback (never inside the signal handler),
 * e.g. SIGINT/SIGTERM for a graceful stop. Call it before starting threads of
 * your own (the signal is blocked and read from a signalfd on Linux with
 * epoll; elsewhere a handler writes it to the loop's self-pipe). Returns 0,
 * TN_EEXIST, TN_EINVAL, or -errno. */
TN_API int tn_signal_add(tn_loop *loop, int signo, tn_signal_fn fn, void *arg);
TN_API int tn_signal_remove(tn_loop *loop, int signo);

/* ------------------------------------------------------------------------
 * Futures (Tornado's Future)
 *
 * THE OWNERSHIP RULE: a future has one producer and one consumer; the
 * producer's part ends when it resolves or fails it, the consumer's part ends
 * when it awaits it, hands it to a combinator or tn_run_sync, or releases it;
 * the future frees itself when both parts have ended.
 * ---------------------------------------------------------------------- */
typedef void (*tn_free_fn)(void *p);
typedef void (*tn_future_fn)(tn_future *f, void *arg);

/* A pending future. NULL on TN_ENOMEM. */
TN_API tn_future *tn_future_new(tn_loop *loop);
/* Producer: resolves with value (ownership of value passes to the future; if
 * free_value is non-NULL and no consumer takes the value, the future frees it
 * with free_value). Ends the producer's part. Returns 0, or TN_ECANCELLED if
 * the future had been cancelled (the value was then freed at once). */
TN_API int tn_future_resolve(tn_future *f, void *value);
TN_API int tn_future_resolve_owned(tn_future *f, void *value, tn_free_fn free_value);
/* Producer: fails with err (< 0). Ends the producer's part. */
TN_API int tn_future_fail(tn_future *f, int err);
/* Producer: fn(f, arg) is called synchronously when the future is cancelled,
 * so the producer can stop its work (and then resolve or fail to end its
 * part). One hook per future. */
TN_API void tn_future_on_cancel(tn_future *f, tn_future_fn fn, void *arg);

/* Consumer: fn(f, arg) runs on a later loop iteration once f is done (never
 * inside resolve). One per future; TN_EEXIST for a second. The consumer's
 * part is still held: release (or take and release) inside fn. */
TN_API int tn_future_on_done(tn_future *f, tn_future_fn fn, void *arg);
/* Consumer: fails f with TN_ECANCELLED now and tells its producer.
 * TN_ESTATE if f is already done. Does not end the consumer's part. */
TN_API int tn_future_cancel(tn_future *f);
/* Consumer: ends the consumer's part. An untaken owned value is freed. */
TN_API void tn_future_release(tn_future *f);

TN_API int tn_future_done(const tn_future *f);
/* 0 if resolved, the error if failed, TN_ESTATE if still pending. */
TN_API int tn_future_error(const tn_future *f);
/* The value (borrowed: the future still owns it). */
TN_API void *tn_future_value(const tn_future *f);
/* The value, whose ownership passes to the caller. */
TN_API void *tn_future_take(tn_future *f);

/* --- combinators (gen.multi, with_timeout, sleep) ---
 * Each consumes its input futures (their consumer parts) and returns a new
 * future; NULL on TN_ENOMEM (inputs are then released). */
/* Resolves when all resolve; values[i] (may be NULL) then receives the value
 * of fs[i] (yours). Fails with the first failure; the others are cancelled
 * and values[] is left untouched. n may be 0. */
TN_API tn_future *tn_all(tn_loop *loop, tn_future **fs, size_t n, void **values);
/* Completes like the first of fs to complete (its value or error); *index
 * (may be NULL) receives which; the others are cancelled. */
TN_API tn_future *tn_any(tn_loop *loop, tn_future **fs, size_t n, size_t *index);
/* Completes like f, or fails with TN_ETIMEOUT after timeout_ms, cancelling f
 * (its producer is told; nothing is leaked). */
TN_API tn_future *tn_with_timeout(tn_loop *loop, tn_future *f, uint64_t timeout_ms);
/* Resolves (value NULL) after ms; cancelling it cancels the timer. */
TN_API tn_future *tn_sleep(tn_loop *loop, uint64_t ms);
/* Runs the loop until f is done or timeout_ms passes (0: no timeout) and
 * consumes f (Tornado's run_sync). Returns f's error, or TN_ETIMEOUT (f is
 * then cancelled). *value (may be NULL) receives the value (yours). */
TN_API int tn_run_sync(tn_loop *loop, tn_future *f, uint64_t timeout_ms, void **value);

/* ------------------------------------------------------------------------
 * Coroutines (stackless, protothread-style; Tornado's coroutines)
 *
 * LOCALS DO NOT SURVIVE AN AWAIT. Keep every variable that must live across
 * TN_AWAIT/TN_YIELD/TN_SLEEP/TN_WAIT_UNTIL in a frame struct whose first
 * member is a tn_co.
 * ---------------------------------------------------------------------- */
typedef struct tn_co tn_co;
typedef int (*tn_co_fn)(tn_co *co);
struct tn_co {
    union { void *label; int line; } lc; /* where to resume */
    tn_loop *loop;
    tn_co_fn fn;
    tn_future *done;      /* completion: the coroutine is its producer */
    tn_future *awaiting;  /* what it waits for, if anything */
    void *value;          /* after an await: the value (yours) */
    int err;              /* after an await: 0 or the error */
    unsigned flags;       /* internal */
};
#define TN_CO_WAITING 0
#define TN_CO_DONE    1

/* Starts fn on the frame co (whose first member must be the tn_co) now, up to
 * its first suspension, and returns the future of its completion. The frame
 * must live until then; frames from tn_co_new are freed by the runtime when
 * the coroutine ends (and when tn_spawn fails). NULL on TN_ENOMEM. */
TN_API tn_future *tn_spawn(tn_loop *loop, tn_co *co, tn_co_fn fn);
/* A zeroed frame of `size` bytes that the runtime frees when its coroutine
 * ends. NULL on TN_ENOMEM. */
TN_API void *tn_co_new(tn_loop *loop, size_t size);
#define TN_CO_NEW(loop, type) ((type *)tn_co_new((loop), sizeof(type)))
/* True once the coroutine's completion future was cancelled. */
#define TN_CANCELLED(co) (((co)->flags & 2u) != 0)

/* Internal entry points the macros expand to. */
TN_API int tn__co_await(tn_co *co, tn_future *f);
TN_API void tn__co_yield(tn_co *co);
TN_API int tn__co_wait(tn_co *co);
TN_API int tn__co_return(tn_co *co, int err, void *value, tn_free_fn free_value);

/* Continuations: labels-as-values with TN_CO_LABELS (GCC/clang; a `switch`
 * may then enclose an await), else a portable switch on a number, where a
 * TN_AWAIT must not sit inside a switch of your own. __COUNTER__ (where the
 * compiler has it) lets two awaits share a source line. */
#ifdef __COUNTER__
#define TN__ID __COUNTER__
#else
#define TN__ID __LINE__
#endif
#define TN__CAT2(a, b) a##b
#define TN__CAT(a, b) TN__CAT2(a, b)
#ifdef TN_CO_LABELS
/* Labels-as-values is a GNU extension (hence -Wpedantic off here), and gcc
 * 12 mistakes a label's address for a local's (-Wdangling-pointer). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define TN__PEDANTIC_OFF                                                    \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wpedantic\"") \
        _Pragma("GCC diagnostic ignored \"-Wdangling-pointer\"")
#else
#define TN__PEDANTIC_OFF _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wpedantic\"")
#endif
#define TN__PEDANTIC_ON _Pragma("GCC diagnostic pop")
#define TN_BEGIN(co) \
    TN__PEDANTIC_OFF if ((co)->lc.label) goto *(co)->lc.label; TN__PEDANTIC_ON
#define TN__SET(co, n) TN__PEDANTIC_OFF (co)->lc.label = &&TN__CAT(tn__lc_, n); TN__PEDANTIC_ON
#define TN__MARK(n) TN__CAT(tn__lc_, n):
#define TN__END_BODY
#else
#define TN_BEGIN(co) switch ((co)->lc.line) { case 0:
#define TN__SET(co, n) (co)->lc.line = (n) + 1 /* 0 is the start */
#define TN__MARK(n) case (n) + 1:
#define TN__END_BODY }
#endif

/* Awaits future expression f: afterwards co->err is 0 or its error and
 * co->value its value (yours). f may be NULL (then co->err is TN_ENOMEM). */
#define TN_AWAIT(co, f) TN__AWAIT(co, f, TN__ID)
#define TN__AWAIT(co, f, n)                        \
    do {                                           \
        if (!tn__co_await((co), (f))) {            \
            TN__SET(co, n);                        \
            return TN_CO_WAITING;                  \
            TN__MARK(n);                           \
        }                                          \
    } while (0)
/* Runs again on the next loop iteration. */
#define TN_YIELD(co) TN__YIELD(co, TN__ID)
#define TN__YIELD(co, n)          \
    do {                          \
        tn__co_yield(co);         \
        TN__SET(co, n);           \
        return TN_CO_WAITING;     \
        TN__MARK(n);              \
    } while (0)
#define TN_SLEEP(co, ms) TN_AWAIT(co, tn_sleep((co)->loop, (ms)))
/* Waits until cond holds. cond is re-checked after every loop iteration that
 * ran something (free while the loop sleeps). co->err is TN_ECANCELLED if the
 * wait ended by cancellation, else 0. */
#define TN_WAIT_UNTIL(co, cond) TN__WAIT_UNTIL(co, cond, TN__ID)
#define TN__WAIT_UNTIL(co, cond, n)                           \
    do {                                                      \
        TN__SET(co, n);                                       \
        if (0) { TN__MARK(n); } /* no fall-through into a label */ \
        if (!(cond) && !TN_CANCELLED(co)) return tn__co_wait(co); \
        (co)->err = (cond) ? 0 : TN_ECANCELLED;               \
    } while (0)
/* End the coroutine: resolve its future with value, or fail it with err. */
#define TN_RETURN(co, value) return tn__co_return((co), 0, (value), NULL)
#define TN_RETURN_OWNED(co, value, free_fn) return tn__co_return((co), 0, (value), (free_fn))
#define TN_FAIL(co, err) return tn__co_return((co), (err), NULL, NULL)
#define TN_END(co) TN__END_BODY return tn__co_return((co), 0, NULL, NULL)

/* ------------------------------------------------------------------------
 * Executor (run_in_executor)
 * ---------------------------------------------------------------------- */
/* Runs on a pool thread; returns 0 or an error (< 0), *result its value. */
typedef int (*tn_work_fn)(void *arg, void **result);
/* Runs fn(arg) on the loop's thread pool; the future resolves on the loop
 * thread with *result (freed with free_result if nobody takes it, e.g. after
 * a cancel) or fails with fn's error. Cancelling a job that has not started
 * removes it; a running one runs to its end. arg stays yours.
 * NULL on TN_ENOMEM. Under TN_NO_THREADS fn runs inline, before this
 * returns, and the future comes back already done. */
TN_API tn_future *tn_run_in_executor(tn_loop *loop, tn_work_fn fn, void *arg, tn_free_fn free_result);

/* ------------------------------------------------------------------------
 * Event and Queue (tornado.locks.Event, tornado.queues.Queue)
 * ---------------------------------------------------------------------- */
typedef struct tn_event tn_event;
/* A cleared event; NULL on TN_ENOMEM. tn_event_free fails its waiters with
 * TN_ECANCELLED. */
TN_API tn_event *tn_event_new(tn_loop *loop);
TN_API void tn_event_free(tn_event *ev);
TN_API void tn_event_set(tn_event *ev);   /* resolves every waiter */
TN_API void tn_event_clear(tn_event *ev);
TN_API int tn_event_is_set(const tn_event *ev);
/* A future that resolves when the event is set (at once if it is). */
TN_API tn_future *tn_event_wait(tn_event *ev);

typedef struct tn_queue tn_queue;
/* maxsize 0: unbounded. Items are opaque pointers; the queue never frees
 * them. tn_queue_free fails pending getters/putters with TN_ECANCELLED; items
 * still queued are returned to nobody (drain first if they own memory). */
TN_API tn_queue *tn_queue_new(tn_loop *loop, size_t maxsize);
TN_API void tn_queue_free(tn_queue *q);
/* Resolves once item is in the queue (at once unless full: backpressure).
 * Cancel a put and the item is not queued (it stays yours). */
TN_API tn_future *tn_queue_put(tn_queue *q, void *item);
/* Resolves with the oldest item. Cancel a get and no item is lost. */
TN_API tn_future *tn_queue_get(tn_queue *q);
TN_API int tn_queue_try_put(tn_queue *q, void *item); /* 0, TN_EFULL, TN_ENOMEM */
TN_API int tn_queue_try_get(tn_queue *q, void **item); /* 0, TN_EEMPTY */
TN_API size_t tn_queue_size(const tn_queue *q);
/* Marks one got item as processed (Queue.task_done); TN_ESTATE if none. */
TN_API int tn_queue_task_done(tn_queue *q);
/* Resolves when every item put has been marked done (Queue.join). */
TN_API tn_future *tn_queue_join(tn_queue *q);

#ifdef __cplusplus
}
#endif
#endif /* TORNADO_H */

/* ======================================================================== */
/*                             IMPLEMENTATION                               */
/* ======================================================================== */
#ifdef TORNADO_IMPLEMENTATION
#ifndef TORNADO_IMPLEMENTATION_DONE
#define TORNADO_IMPLEMENTATION_DONE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>

#ifndef TN_MALLOC
#define TN_MALLOC(sz) malloc(sz)
#define TN_REALLOC(p, sz) realloc((p), (sz))
#define TN_FREE(p) free(p)
#endif
#ifndef TN_ASSERT
#include <assert.h>
#define TN_ASSERT(c) assert(c)
#endif
#ifndef TN_EXECUTOR_THREADS
#define TN_EXECUTOR_THREADS 4
#endif

#if defined(__linux__) && !defined(TN_BACKEND_POLL)
#define TN__EPOLL 1
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#else
#define TN__EPOLL 0
#endif

#ifndef TN_NO_THREADS
#include <pthread.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- errors */
const char *tn_strerror(int err) {
    switch (err) {
    case TN_OK: return "success";
    case TN_ENOMEM: return "out of memory";
    case TN_EINVAL: return "invalid argument";
    case TN_ETIMEOUT: return "timed out";
    case TN_ECANCELLED: return "cancelled";
    case TN_ECLOSED: return "closed";
    case TN_EEXIST: return "already registered";
    case TN_ENOENT: return "not found";
    case TN_EFULL: return "queue full";
    case TN_EEMPTY: return "queue empty";
    case TN_ESTATE: return "invalid state for this operation";
    case TN_ENOTSUP: return "not supported";
    case TN_EAGAIN: return "incomplete input";
    case TN_ERESOLVE: return "name resolution failed";
    case TN_EREFUSED: return "connection refused";
    case TN_EMALFORMED: return "malformed HTTP message";
    case TN_ETOOLARGE: return "body too large";
    case TN_EURILONG: return "request-target too long";
    case TN_EHEADERS: return "header fields too large";
    case TN_ENOTIMPL: return "not implemented";
    case TN_EVERSION: return "HTTP version not supported";
    default: break;
    }
    if (err < 0 && err > -1000) return strerror(-err);
    return "unknown error";
}

/* ------------------------------------------------------ small utilities */
/* Grows *p (an array of elem-sized items with capacity *cap) to hold at
 * least need items, doubling. Returns 0 or TN_ENOMEM (then *p is unchanged). */
static int tn__grow(void **p, size_t *cap, size_t need, size_t elem) {
    size_t ncap;
    void *np;
    if (need <= *cap) return 0;
    ncap = *cap ? *cap : 8;
    while (ncap < need) ncap *= 2;
    if (ncap > SIZE_MAX / elem) return TN_ENOMEM;
    np = TN_REALLOC(*p, ncap * elem);
    if (!np) return TN_ENOMEM;
    *p = np;
    *cap = ncap;
    return 0;
}

static uint64_t tn__clock_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#if !TN__EPOLL
static int tn__set_nonblock_cloexec(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
    fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0) return -errno;
    return 0;
}
#endif

/* -------------------------------------------------------- loop structure */
typedef struct tn__handler {
    tn_io_fn cb;
    void *arg;
    unsigned events;
    uint32_t gen; /* 0: no handler; else the registration's generation */
} tn__handler;

/* An event collected by the backend; delivered only if the fd's handler
 * still has the generation it had when the event was collected. */
typedef struct tn__ready {
    int fd;
    uint32_t gen;
    unsigned events;
} tn__ready;

typedef struct tn__cb {
    tn_callback_fn fn;
    void *arg;
} tn__cb;

typedef struct tn__timer_slot {
    tn_callback_fn fn;
    void *arg;
    uint64_t interval_ns; /* 0: one-shot */
    uint32_t heap_idx;    /* position in the heap while pending */
    uint32_t gen;         /* bumped when the slot is freed: stale handles miss */
    uint32_t next_free;   /* free-list link (slot index + 1, 0 ends) */
    uint32_t pending;
} tn__timer_slot;

typedef struct tn__heap_entry {
    uint64_t when; /* ns, monotonic */
    uint64_t seq;  /* tie-break: FIFO among equal deadlines */
    uint32_t slot;
} tn__heap_entry;

#define TN__MAXSIG 65

typedef struct tn__executor tn__executor;
typedef struct tn__job tn__job;

struct tn_loop {
    /* backend */
#if TN__EPOLL
    int epfd;
    struct epoll_event *ep_events;
    size_t ep_cap;
#else
    struct pollfd *pfds;
    size_t npfds, pfds_cap;
    int *fd_slot; /* fd -> index in pfds, -1 if none */
    size_t fd_slot_cap;
#endif
    tn__handler *handlers; /* indexed by fd */
    size_t handlers_cap, nhandlers;
    uint32_t next_gen;
    tn__ready *ready;
    size_t nready, ready_cap;

    /* callbacks: a ring */
    tn__cb *cbs;
    size_t cb_head, cb_count, cb_cap;

    /* timers: slots + binary min-heap */
    tn__timer_slot *slots;
    size_t slots_cap, slots_used;
    uint32_t free_slot; /* index + 1, 0: none */
    tn__heap_entry *heap;
    size_t heap_len, heap_cap;
    uint64_t timer_seq;
    uint64_t now_ns, start_ns;

    /* wake-up: eventfd (rfd == wfd) or self-pipe */
    int wake_rfd, wake_wfd;
#ifndef TN_NO_THREADS
    pthread_mutex_t ts_lock;
    tn__cb *ts_cbs;
    size_t ts_count, ts_cap;
    tn__job *jobs_done; /* completed executor jobs, LIFO; reversed on drain */
    int wake_pending;
    tn__executor *executor;
    int executor_threads;
#endif

    /* signals */
    struct {
        tn_signal_fn fn;
        void *arg;
        struct sigaction old;
    } sig[TN__MAXSIG];
    int nsignals;
#if TN__EPOLL
    int sigfd;
    sigset_t sigmask, sigmask_old;
#endif

    /* coroutines waiting in TN_WAIT_UNTIL */
    tn_co **waiters, **waiters_spare;
    size_t nwaiters, waiters_cap, waiters_spare_cap;
    int waiters_progress;

    size_t nfutures, ncoroutines, njobs;
    int running, stop_requested;
};

/* -------------------------------------------------------------- backends
 * A backend is five same-shaped functions over the loop: init, free,
 * set (add/modify the interest for an fd), del, and poll (wait, then append
 * (fd, generation, events) to loop->ready). Adding kqueue is one more block.
 * ---------------------------------------------------------------------- */
#if TN__EPOLL
static int tn__be_init(tn_loop *l) {
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    return l->epfd < 0 ? -errno : 0;
}
static void tn__be_free(tn_loop *l) {
    if (l->epfd >= 0) close(l->epfd);
    TN_FREE(l->ep_events);
}
static int tn__be_set(tn_loop *l, int fd, unsigned old, unsigned events, uint32_t gen) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = ((events & TN_READ) ? EPOLLIN : 0u) | ((events & TN_WRITE) ? EPOLLOUT : 0u);
    ev.data.u64 = ((uint64_t)gen << 32) | (uint32_t)fd;
    if (epoll_ctl(l->epfd, old ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0) return -errno;
    return 0;
}
static void tn__be_del(tn_loop *l, int fd) {
    struct epoll_event ev; /* non-NULL for kernels before 2.6.9 */
    /* EBADF/ENOENT are fine: the fd may already be closed. */
    (void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, &ev);
}
static int tn__be_poll(tn_loop *l, int timeout_ms) {
    int n, i;
    size_t want = l->nhandlers + 1;
    if (want > 1024) want = 1024; /* a batch; the rest come next iteration */
    if (tn__grow((void **)&l->ep_events, &l->ep_cap, want, sizeof *l->ep_events)) return TN_ENOMEM;
    if (tn__grow((void **)&l->ready, &l->ready_cap, want, sizeof *l->ready)) return TN_ENOMEM;
    n = epoll_wait(l->epfd, l->ep_events, (int)want, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (i = 0; i < n; i++) {
        uint32_t e = l->ep_events[i].events;
        tn__ready *r = &l->ready[l->nready++];
        r->fd = (int)(uint32_t)l->ep_events[i].data.u64;
        r->gen = (uint32_t)(l->ep_events[i].data.u64 >> 32);
        r->events = ((e & EPOLLIN) ? TN_READ : 0u) | ((e & EPOLLOUT) ? TN_WRITE : 0u) |
                    ((e & (EPOLLERR | EPOLLHUP)) ? TN_ERROR : 0u);
    }
    return 0;
}
static const char *tn__be_name(void) { return "epoll"; }
static int tn__be_fd(const tn_loop *l) { return l->epfd; }
#else
static int tn__be_init(tn_loop *l) { (void)l; return 0; }
static void tn__be_free(tn_loop *l) {
    TN_FREE(l->pfds);
    TN_FREE(l->fd_slot);
}
static int tn__be_set(tn_loop *l, int fd, unsigned old, unsigned events, uint32_t gen) {
    struct pollfd *p;
    (void)gen; /* the generation is read from the handler table at poll time */
    if (!old) {
        size_t need = (size_t)fd + 1, i, oldcap = l->fd_slot_cap;
        if (tn__grow((void **)&l->fd_slot, &l->fd_slot_cap, need, sizeof(int))) return TN_ENOMEM;
        for (i = oldcap; i < l->fd_slot_cap; i++) l->fd_slot[i] = -1;
        if (tn__grow((void **)&l->pfds, &l->pfds_cap, l->npfds + 1, sizeof *l->pfds)) return TN_ENOMEM;
        l->fd_slot[fd] = (int)l->npfds;
        p = &l->pfds[l->npfds++];
        p->fd = fd;
    } else {
        p = &l->pfds[l->fd_slot[fd]];
    }
    p->events = (short)(((events & TN_READ) ? POLLIN : 0) | ((events & TN_WRITE) ? POLLOUT : 0));
    p->revents = 0;
    return 0;
}
static void tn__be_del(tn_loop *l, int fd) {
    int slot = l->fd_slot[fd];
    struct pollfd *last = &l->pfds[--l->npfds];
    l->pfds[slot] = *last;
    l->fd_slot[last->fd] = slot;
    l->fd_slot[fd] = -1;
}
static int tn__be_poll(tn_loop *l, int timeout_ms) {
    int n;
    size_t i;
    if (tn__grow((void **)&l->ready, &l->ready_cap, l->npfds + 1, sizeof *l->ready)) return TN_ENOMEM;
    n = poll(l->pfds, (nfds_t)l->npfds, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (i = 0; i < l->npfds && n > 0; i++) {
        short e = l->pfds[i].revents;
        tn__ready *r;
        if (!e) continue;
        n--;
        r = &l->ready[l->nready++];
        r->fd = l->pfds[i].fd;
        r->gen = l->handlers[r->fd].gen;
        r->events = ((e & POLLIN) ? TN_READ : 0u) | ((e & POLLOUT) ? TN_WRITE : 0u) |
                    ((e & (POLLERR | POLLHUP | POLLNVAL)) ? TN_ERROR : 0u);
    }
    return 0;
}
static const char *tn__be_name(void) { return "poll"; }
static int tn__be_fd(const tn_loop *l) { (void)l; return -1; }
#endif

/* ------------------------------------------------------------ fd handlers */
int tn_add_handler(tn_loop *l, int fd, unsigned events, tn_io_fn cb, void *arg) {
    size_t old_cap = l->handlers_cap;
    tn__handler *h;
    int rc;
    if (fd < 0 || !cb || (events & ~(TN_READ | TN_WRITE))) return TN_EINVAL;
    if ((size_t)fd >= l->handlers_cap) {
        if (tn__grow((void **)&l->handlers, &l->handlers_cap, (size_t)fd + 1, sizeof *l->handlers))
            return TN_ENOMEM;
        memset(l->handlers + old_cap, 0, (l->handlers_cap - old_cap) * sizeof *l->handlers);
    }
    h = &l->handlers[fd];
    if (h->gen) return TN_EEXIST;
    if (++l->next_gen == 0) l->next_gen = 1;
    /* Register with the backend even for events == 0 so update is a MOD. */
    rc = tn__be_set(l, fd, 0, events, l->next_gen);
    if (rc) return rc;
    h->cb = cb;
    h->arg = arg;
    h->events = events;
    h->gen = l->next_gen;
    l->nhandlers++;
    return 0;
}

int tn_update_handler(tn_loop *l, int fd, unsigned events) {
    tn__handler *h;
    int rc;
    if (fd < 0 || (size_t)fd >= l->handlers_cap || !l->handlers[fd].gen) return TN_ENOENT;
    if (events & ~(TN_READ | TN_WRITE)) return TN_EINVAL;
    h = &l->handlers[fd];
    if (h->events == events) return 0; /* no syscall when nothing changes */
    rc = tn__be_set(l, fd, 1, events, h->gen);
    if (rc) return rc;
    h->events = events;
    return 0;
}

int tn_remove_handler(tn_loop *l, int fd) {
    if (fd < 0 || (size_t)fd >= l->handlers_cap || !l->handlers[fd].gen) return TN_ENOENT;
    tn__be_del(l, fd);
    l->handlers[fd].gen = 0; /* any collected event for it is now stale */
    l->handlers[fd].cb = NULL;
    l->nhandlers--;
    return 0;
}

/* -------------------------------------------------------------- callbacks */
int tn_add_callback(tn_loop *l, tn_callback_fn fn, void *arg) {
    size_t tail;
    if (l->cb_count == l->cb_cap) {
        /* Grow and unwrap the ring so it stays contiguous from cb_head. */
        size_t ncap = l->cb_cap ? l->cb_cap * 2 : 64, i;
        tn__cb *n = (tn__cb *)TN_MALLOC(ncap * sizeof *n);
        if (!n) return TN_ENOMEM;
        for (i = 0; i < l->cb_count; i++) n[i] = l->cbs[(l->cb_head + i) % l->cb_cap];
        TN_FREE(l->cbs);
        l->cbs = n;
        l->cb_cap = ncap;
        l->cb_head = 0;
    }
    tail = (l->cb_head + l->cb_count) % l->cb_cap;
    l->cbs[tail].fn = fn;
    l->cbs[tail].arg = arg;
    l->cb_count++;
    return 0;
}

#ifndef TN_NO_THREADS
static void tn__wake(tn_loop *l) {
#if TN__EPOLL
    uint64_t one = 1;
    ssize_t r = write(l->wake_wfd, &one, sizeof one);
#else
    char c = 0;
    ssize_t r = write(l->wake_wfd, &c, 1);
#endif
    (void)r; /* EAGAIN: a wake-up is already pending, which is all we need */
}


int tn_add_callback_threadsafe(tn_loop *l, tn_callback_fn fn, void *arg) {
    int wake;
    pthread_mutex_lock(&l->ts_lock);
    if (tn__grow((void **)&l->ts_cbs, &l->ts_cap, l->ts_count + 1, sizeof *l->ts_cbs)) {
        pthread_mutex_unlock(&l->ts_lock);
        return TN_ENOMEM;
    }
    l->ts_cbs[l->ts_count].fn = fn;
    l->ts_cbs[l->ts_count].arg = arg;
    l->ts_count++;
    wake = !l->wake_pending;
    l->wake_pending = 1;
    pthread_mutex_unlock(&l->ts_lock);
    if (wake) tn__wake(l);
    return 0;
}
#else
int tn_add_callback_threadsafe(tn_loop *l, tn_callback_fn fn, void *arg) {
    return tn_add_callback(l, fn, arg);
}
#endif

/* ----------------------------------------------------------------- timers */
#define TN__HEAP_LESS(a, b) ((a).when < (b).when || ((a).when == (b).when && (a).seq < (b).seq))

static void tn__heap_place(tn_loop *l, size_t i, tn__heap_entry e) {
    l->heap[i] = e;
    l->slots[e.slot].heap_idx = (uint32_t)i;
}

static void tn__heap_up(tn_loop *l, size_t i) {
    tn__heap_entry e = l->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!TN__HEAP_LESS(e, l->heap[parent])) break;
        tn__heap_place(l, i, l->heap[parent]);
        i = parent;
    }
    tn__heap_place(l, i, e);
}

static void tn__heap_down(tn_loop *l, size_t i) {
    tn__heap_entry e = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->heap_len) break;
        if (c + 1 < l->heap_len && TN__HEAP_LESS(l->heap[c + 1], l->heap[c])) c++;
        if (!TN__HEAP_LESS(l->heap[c], e)) break;
        tn__heap_place(l, i, l->heap[c]);
        i = c;
    }
    tn__heap_place(l, i, e);
}

static void tn__heap_remove(tn_loop *l, size_t i) {
    l->heap_len--;
    if (i == l->heap_len) return;
    tn__heap_place(l, i, l->heap[l->heap_len]);
    if (i > 0 && TN__HEAP_LESS(l->heap[i], l->heap[(i - 1) / 2]))
        tn__heap_up(l, i);
    else
        tn__heap_down(l, i);
}

static int tn__heap_push(tn_loop *l, uint32_t slot, uint64_t when) {
    tn__heap_entry e;
    if (tn__grow((void **)&l->heap, &l->heap_cap, l->heap_len + 1, sizeof *l->heap)) return TN_ENOMEM;
    e.when = when;
    e.seq = l->timer_seq++;
    e.slot = slot;
    l->heap[l->heap_len++] = e;
    tn__heap_up(l, l->heap_len - 1);
    l->slots[slot].pending = 1;
    return 0;
}

static void tn__slot_free(tn_loop *l, uint32_t slot) {
    tn__timer_slot *s = &l->slots[slot];
    s->pending = 0;
    s->fn = NULL;
    if (++s->gen == 0) s->gen = 1;
    s->next_free = l->free_slot;
    l->free_slot = slot + 1;
    l->slots_used--;
}

static int tn__timer_start(tn_loop *l, uint64_t when_ns, uint64_t interval_ns, tn_callback_fn fn,
                           void *arg, tn_timer *out) {
    uint32_t slot;
    tn__timer_slot *s;
    if (!fn) return TN_EINVAL;
    if (!l->free_slot) {
        size_t old = l->slots_cap, i;
        if (old >= UINT32_MAX - 1) return TN_ENOMEM;
        if (tn__grow((void **)&l->slots, &l->slots_cap, old + 1, sizeof *l->slots)) return TN_ENOMEM;
        /* Thread the new slots onto the free list, lowest index first. */
        for (i = l->slots_cap; i > old; i--) {
            l->slots[i - 1].gen = 1;
            l->slots[i - 1].pending = 0;
            l->slots[i - 1].next_free = l->free_slot;
            l->free_slot = (uint32_t)i;
        }
    }
    slot = l->free_slot - 1;
    s = &l->slots[slot];
    if (tn__heap_push(l, slot, when_ns)) return TN_ENOMEM;
    l->free_slot = s->next_free;
    l->slots_used++;
    s->fn = fn;
    s->arg = arg;
    s->interval_ns = interval_ns;
    if (out) *out = ((uint64_t)s->gen << 32) | (uint64_t)(slot + 1);
    return 0;
}

int tn_call_later(tn_loop *l, uint64_t delay_ms, tn_callback_fn fn, void *arg, tn_timer *out) {
    if (delay_ms > UINT64_MAX / 2000000u) return TN_EINVAL;
    return tn__timer_start(l, l->now_ns + delay_ms * 1000000u, 0, fn, arg, out);
}

int tn_call_at(tn_loop *l, uint64_t when_ms, tn_callback_fn fn, void *arg, tn_timer *out) {
    if (when_ms > UINT64_MAX / 2000000u) return TN_EINVAL;
    return tn__timer_start(l, l->start_ns + when_ms * 1000000u, 0, fn, arg, out);
}

int tn_call_every(tn_loop *l, uint64_t interval_ms, tn_callback_fn fn, void *arg, tn_timer *out) {
    if (interval_ms == 0 || interval_ms > UINT64_MAX / 2000000u) return TN_EINVAL;
    return tn__timer_start(l, l->now_ns + interval_ms * 1000000u, interval_ms * 1000000u, fn, arg,
                           out);
}

int tn_cancel_timer(tn_loop *l, tn_timer t) {
    uint32_t slot = (uint32_t)(t & 0xffffffffu), gen = (uint32_t)(t >> 32);
    tn__timer_slot *s;
    if (slot == 0 || slot > l->slots_cap) return TN_ENOENT;
    s = &l->slots[slot - 1];
    if (s->gen != gen || !s->fn) return TN_ENOENT;
    if (s->pending) tn__heap_remove(l, s->heap_idx);
    tn__slot_free(l, slot - 1);
    return 0;
}

uint64_t tn_time_ms(const tn_loop *l) { return (l->now_ns - l->start_ns) / 1000000u; }

/* Runs the timers due now that were scheduled before this pass began, so a
 * timer that schedules a zero-delay timer cannot starve I/O. */
static void tn__run_timers(tn_loop *l) {
    uint64_t seq_limit = l->timer_seq;
    while (l->heap_len && l->heap[0].when <= l->now_ns && l->heap[0].seq < seq_limit) {
        uint32_t slot = l->heap[0].slot;
        uint64_t when = l->heap[0].when;
        tn__timer_slot *s = &l->slots[slot];
        tn_callback_fn fn = s->fn;
        void *arg = s->arg;
        uint32_t gen = s->gen;
        tn__heap_remove(l, 0);
        s->pending = 0;
        if (s->interval_ns) {
            /* Re-arm before the call (so the callback may cancel it) at the
             * next multiple of the interval after now: a late run skips the
             * missed ones instead of bunching them up. */
            uint64_t iv = s->interval_ns;
            uint64_t next = when + iv;
            if (next <= l->now_ns) next += ((l->now_ns - next) / iv + 1) * iv;
            if (tn__heap_push(l, slot, next)) { /* out of memory: it stops */
                tn__slot_free(l, slot);
            }
        }
        fn(l, arg);
        /* The callback may have cancelled the timer, whose slot may even have
         * been reused: only a one-shot that is still ours is freed here. */
        s = &l->slots[slot];
        if (s->gen == gen && s->fn && !s->pending && !s->interval_ns) tn__slot_free(l, slot);
    }
}

/* ------------------------------------------------- wake-up and signals */
static void tn__drain_threadsafe(tn_loop *l);

/* Reads the wake fd dry. With the self-pipe, a non-zero byte is a signal
 * number written by tn__pipe_signal_handler. */
static void tn__on_wake(tn_loop *l, int fd, unsigned events, void *arg) {
    (void)events;
    (void)arg;
#if TN__EPOLL
    {
        uint64_t v;
        while (read(fd, &v, sizeof v) > 0) {}
    }
#else
    {
        unsigned char buf[64];
        ssize_t n, i;
        while ((n = read(fd, buf, sizeof buf)) > 0) {
            for (i = 0; i < n; i++) {
                int signo = buf[i];
                if (signo > 0 && signo < TN__MAXSIG && l->sig[signo].fn)
                    l->sig[signo].fn(l, signo, l->sig[signo].arg);
            }
        }
    }
#endif
    tn__drain_threadsafe(l);
}

#if TN__EPOLL
static void tn__on_signalfd(tn_loop *l, int fd, unsigned events, void *arg) {
    struct signalfd_siginfo si;
    (void)events;
    (void)arg;
    while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
        int signo = (int)si.ssi_signo;
        if (signo > 0 && signo < TN__MAXSIG && l->sig[signo].fn) l->sig[signo].fn(l, signo, l->sig[signo].arg);
    }
}

static int tn__sigmask_apply(int how, int signo) {
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
#ifndef TN_NO_THREADS
    return -pthread_sigmask(how, &one, NULL);
#else
    return sigprocmask(how, &one, NULL) ? -errno : 0;
#endif
}

int tn_signal_add(tn_loop *l, int signo, tn_signal_fn fn, void *arg) {
    int rc, fd;
    if (signo <= 0 || signo >= TN__MAXSIG || !fn || signo == SIGKILL || signo == SIGSTOP) return TN_EINVAL;
    if (l->sig[signo].fn) return TN_EEXIST;
    rc = tn__sigmask_apply(SIG_BLOCK, signo);
    if (rc) return rc;
    sigaddset(&l->sigmask, signo);
    fd = signalfd(l->sigfd, &l->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        sigdelset(&l->sigmask, signo);
        tn__sigmask_apply(SIG_UNBLOCK, signo);
        return rc;
    }
    if (l->sigfd < 0) {
        l->sigfd = fd;
        rc = tn_add_handler(l, fd, TN_READ, tn__on_signalfd, NULL);
        if (rc) {
            close(fd);
            l->sigfd = -1;
            sigdelset(&l->sigmask, signo);
            tn__sigmask_apply(SIG_UNBLOCK, signo);
            return rc;
        }
    }
    l->sig[signo].fn = fn;
    l->sig[signo].arg = arg;
    l->nsignals++;
    return 0;
}

int tn_signal_remove(tn_loop *l, int signo) {
    if (signo <= 0 || signo >= TN__MAXSIG || !l->sig[signo].fn) return TN_ENOENT;
    l->sig[signo].fn = NULL;
    l->nsignals--;
    sigdelset(&l->sigmask, signo);
    (void)signalfd(l->sigfd, &l->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
    tn__sigmask_apply(SIG_UNBLOCK, signo);
    if (l->nsignals == 0) {
        tn_remove_handler(l, l->sigfd);
        close(l->sigfd);
        l->sigfd = -1;
    }
    return 0;
}
#else
/* The portable path: a signal handler cannot find a loop without a global,
 * so this is the library's one piece of process-wide state (signal
 * dispositions are process-wide anyway): the write end of the self-pipe of
 * the one loop that handles signals. */
static volatile sig_atomic_t tn__signal_wfd = -1;
static tn_loop *tn__signal_owner;

static void tn__pipe_signal_handler(int signo) {
    int saved = errno;
    unsigned char c = (unsigned char)signo;
    if (tn__signal_wfd >= 0) {
        ssize_t r = write((int)tn__signal_wfd, &c, 1);
        (void)r;
    }
    errno = saved;
}

int tn_signal_add(tn_loop *l, int signo, tn_signal_fn fn, void *arg) {
    struct sigaction sa;
    if (signo <= 0 || signo >= TN__MAXSIG || !fn || signo == SIGKILL || signo == SIGSTOP) return TN_EINVAL;
    if (l->sig[signo].fn) return TN_EEXIST;
    if (tn__signal_owner && tn__signal_owner != l) return TN_EEXIST;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tn__pipe_signal_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    tn__signal_owner = l;
    tn__signal_wfd = l->wake_wfd;
    if (sigaction(signo, &sa, &l->sig[signo].old) < 0) return -errno;
    l->sig[signo].fn = fn;
    l->sig[signo].arg = arg;
    l->nsignals++;
    return 0;
}

int tn_signal_remove(tn_loop *l, int signo) {
    if (signo <= 0 || signo >= TN__MAXSIG || !l->sig[signo].fn) return TN_ENOENT;
    sigaction(signo, &l->sig[signo].old, NULL);
    l->sig[signo].fn = NULL;
    if (--l->nsignals == 0) {
        tn__signal_wfd = -1;
        tn__signal_owner = NULL;
    }
    return 0;
}
#endif

/* ------------------------------------------------------- loop lifecycle */
static void tn__executor_free(tn_loop *l);
static void tn__drop_callbacks(tn_loop *l);

int tn_loop_new(tn_loop **out, const tn_loop_opts *opts) {
    tn_loop *l;
    int rc;
    *out = NULL;
    l = (tn_loop *)TN_MALLOC(sizeof *l);
    if (!l) return TN_ENOMEM;
    memset(l, 0, sizeof *l);
    l->wake_rfd = l->wake_wfd = -1;
#if TN__EPOLL
    l->sigfd = -1;
    sigemptyset(&l->sigmask);
#endif
    l->start_ns = l->now_ns = tn__clock_ns();
#ifndef TN_NO_THREADS
    l->executor_threads = (opts && opts->executor_threads > 0) ? opts->executor_threads : TN_EXECUTOR_THREADS;
    if (pthread_mutex_init(&l->ts_lock, NULL)) {
        TN_FREE(l);
        return TN_ENOMEM;
    }
#else
    (void)opts;
#endif
    rc = tn__be_init(l);
    if (rc) goto fail;
#if TN__EPOLL
    l->wake_rfd = l->wake_wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->wake_rfd < 0) {
        rc = -errno;
        goto fail;
    }
#else
    {
        int p[2];
        if (pipe(p) < 0) {
            rc = -errno;
            goto fail;
        }
        l->wake_rfd = p[0];
        l->wake_wfd = p[1];
        if ((rc = tn__set_nonblock_cloexec(p[0])) || (rc = tn__set_nonblock_cloexec(p[1]))) goto fail;
    }
#endif
    rc = tn_add_handler(l, l->wake_rfd, TN_READ, tn__on_wake, NULL);
    if (rc) goto fail;
    l->nhandlers--; /* internal fds are not the user's to count */
    *out = l;
    return 0;
fail:
    tn_loop_free(l);
    return rc;
}

void tn_loop_free(tn_loop *l) {
    int s;
    if (!l) return;
    for (s = 1; s < TN__MAXSIG; s++)
        if (l->sig[s].fn) tn_signal_remove(l, s);
    tn__executor_free(l);
    tn__drop_callbacks(l);
    if (l->wake_rfd >= 0) close(l->wake_rfd);
    if (l->wake_wfd >= 0 && l->wake_wfd != l->wake_rfd) close(l->wake_wfd);
    tn__be_free(l);
#ifndef TN_NO_THREADS
    TN_FREE(l->ts_cbs);
    pthread_mutex_destroy(&l->ts_lock);
#endif
    TN_FREE(l->handlers);
    TN_FREE(l->ready);
    TN_FREE(l->cbs);
    TN_FREE(l->slots);
    TN_FREE(l->heap);
    TN_FREE(l->waiters);
    TN_FREE(l->waiters_spare);
    TN_FREE(l);
}

const char *tn_loop_backend(const tn_loop *l) {
    (void)l;
    return tn__be_name();
}
int tn_loop_fd(const tn_loop *l) { return tn__be_fd(l); }

void tn_loop_get_stats(const tn_loop *l, tn_loop_stats *o) {
    o->handlers = l->nhandlers;
    o->timers = l->slots_used;
    o->callbacks = l->cb_count;
    o->futures = l->nfutures;
    o->coroutines = l->ncoroutines;
    o->jobs = l->njobs;
}

/* ----------------------------------------------------------- iteration */
static void tn__run_callbacks(tn_loop *l) {
    /* Only those queued before this pass: a callback that re-queues itself
     * runs once per iteration, and I/O is never starved. */
    size_t n = l->cb_count;
    while (n--) {
        tn__cb c = l->cbs[l->cb_head];
        l->cb_head = (l->cb_head + 1) % l->cb_cap;
        l->cb_count--;
        c.fn(l, c.arg);
    }
}

static void tn__run_waiters(tn_loop *l);

int tn_loop_next_timeout(tn_loop *l) {
    uint64_t now, delta;
    if (l->cb_count || l->waiters_progress || l->stop_requested) return 0;
    if (!l->heap_len) return -1;
    now = tn__clock_ns();
    if (l->heap[0].when <= now) return 0;
    /* Round up: waking a little late is harmless, early costs a spin. */
    delta = (l->heap[0].when - now + 999999u) / 1000000u;
    return delta > INT_MAX ? INT_MAX : (int)delta;
}

int tn_loop_step(tn_loop *l, int max_wait_ms) {
    int timeout, rc;
    size_t i;
    l->now_ns = tn__clock_ns();
    tn__run_callbacks(l);
    tn__run_timers(l);
    tn__run_waiters(l);
    timeout = tn_loop_next_timeout(l);
    if (max_wait_ms >= 0 && (timeout < 0 || timeout > max_wait_ms)) timeout = max_wait_ms;
    l->nready = 0;
    rc = tn__be_poll(l, timeout);
    l->now_ns = tn__clock_ns();
    for (i = 0; i < l->nready; i++) {
        tn__ready r = l->ready[i];
        tn__handler *h;
        if ((size_t)r.fd >= l->handlers_cap) continue;
        h = &l->handlers[r.fd];
        /* Removed (or removed and re-added) since the event was collected:
         * the event belongs to an fd that no longer exists for us. */
        if (h->gen != r.gen || !h->cb) continue;
        h->cb(l, r.fd, r.events, h->arg);
    }
    l->nready = 0;
    return rc;
}

int tn_loop_run(tn_loop *l) {
    int rc = 0;
    if (l->running) return TN_ESTATE;
    l->running = 1;
    while (!l->stop_requested) {
        rc = tn_loop_step(l, -1);
        if (rc && rc != TN_ENOMEM) break; /* out of memory: retry next turn */
        rc = 0;
    }
    l->stop_requested = 0;
    l->running = 0;
    return rc;
}

void tn_loop_stop(tn_loop *l) { l->stop_requested = 1; }
/* --------------------------------------------------------------- futures */
#define TN__F_DONE 1u
#define TN__F_PRODUCER 2u /* producer's part still held */
#define TN__F_CONSUMER 4u /* consumer's part still held */
#define TN__F_DISPATCH 8u /* done callback queued on the loop */
#define TN__F_TAKEN 16u   /* value handed to the consumer */

struct tn_future {
    tn_loop *loop;
    void *value;
    tn_free_fn free_value;
    tn_future_fn done_fn, cancel_fn;
    void *done_arg, *cancel_arg;
    uint64_t aux; /* for the library's own producers: a timer handle */
    int err;
    unsigned flags;
};

tn_future *tn_future_new(tn_loop *l) {
    tn_future *f = (tn_future *)TN_MALLOC(sizeof *f);
    if (!f) return NULL;
    memset(f, 0, sizeof *f);
    f->loop = l;
    f->flags = TN__F_PRODUCER | TN__F_CONSUMER;
    l->nfutures++;
    return f;
}

static void tn__future_maybe_free(tn_future *f) {
    if (f->flags & (TN__F_PRODUCER | TN__F_CONSUMER | TN__F_DISPATCH)) return;
    if (f->value && f->free_value && !(f->flags & TN__F_TAKEN)) f->free_value(f->value);
    f->loop->nfutures--;
    TN_FREE(f);
}

static void tn__future_dispatch(tn_loop *l, void *arg) {
    tn_future *f = (tn_future *)arg;
    tn_future_fn fn = f->done_fn;
    (void)l;
    f->flags &= ~TN__F_DISPATCH;
    f->done_fn = NULL;
    if (fn && (f->flags & TN__F_CONSUMER)) fn(f, f->done_arg);
    else tn__future_maybe_free(f);
}

/* At tn_loop_free: pending callbacks are dropped, but a queued future
 * dispatch holds the future alive, so let it go (without calling the done
 * callback) and the future frees itself if both its parts have ended. */
static void tn__drop_callbacks(tn_loop *l) {
    while (l->cb_count) {
        tn__cb c = l->cbs[l->cb_head];
        l->cb_head = (l->cb_head + 1) % l->cb_cap;
        l->cb_count--;
        if (c.fn == tn__future_dispatch) {
            tn_future *f = (tn_future *)c.arg;
            f->flags &= ~TN__F_DISPATCH;
            f->done_fn = NULL;
            tn__future_maybe_free(f);
        }
    }
}

/* Queues the done callback. Running it on a later iteration, never inside
 * resolve, means a producer never finds itself re-entered by its consumer. */
static void tn__future_schedule(tn_future *f) {
    if (!f->done_fn || (f->flags & TN__F_DISPATCH)) return;
    if (tn_add_callback(f->loop, tn__future_dispatch, f) == 0) f->flags |= TN__F_DISPATCH;
    /* else: out of memory; the callback is lost. Nothing better to do that
     * does not allocate; the consumer can still poll tn_future_done. */
}

static int tn__future_complete(tn_future *f, int err, void *value, tn_free_fn free_value) {
    if (!(f->flags & TN__F_PRODUCER)) return TN_ESTATE;
    f->flags &= ~TN__F_PRODUCER;
    if (f->flags & TN__F_DONE) {
        /* Cancelled before we got here: nobody will ever read this value. */
        if (value && free_value) free_value(value);
        tn__future_maybe_free(f);
        return TN_ECANCELLED;
    }
    f->flags |= TN__F_DONE;
    f->err = err;
    f->value = value;
    f->free_value = free_value;
    tn__future_schedule(f);
    tn__future_maybe_free(f);
    return 0;
}

int tn_future_resolve(tn_future *f, void *value) { return tn__future_complete(f, 0, value, NULL); }
int tn_future_resolve_owned(tn_future *f, void *value, tn_free_fn free_value) {
    return tn__future_complete(f, 0, value, free_value);
}
int tn_future_fail(tn_future *f, int err) {
    return tn__future_complete(f, err < 0 ? err : TN_EINVAL, NULL, NULL);
}

void tn_future_on_cancel(tn_future *f, tn_future_fn fn, void *arg) {
    f->cancel_fn = fn;
    f->cancel_arg = arg;
}

int tn_future_on_done(tn_future *f, tn_future_fn fn, void *arg) {
    if (f->done_fn) return TN_EEXIST;
    f->done_fn = fn;
    f->done_arg = arg;
    if (f->flags & TN__F_DONE) tn__future_schedule(f);
    return 0;
}

int tn_future_cancel(tn_future *f) {
    tn_future_fn fn = f->cancel_fn;
    if (f->flags & TN__F_DONE) return TN_ESTATE;
    f->flags |= TN__F_DONE;
    f->err = TN_ECANCELLED;
    f->cancel_fn = NULL;
    tn__future_schedule(f);
    /* The producer still holds its part, so f stays valid during fn. */
    if (fn) fn(f, f->cancel_arg);
    return 0;
}

void tn_future_release(tn_future *f) {
    if (!f) return;
    f->flags &= ~TN__F_CONSUMER;
    f->done_fn = NULL;
    tn__future_maybe_free(f);
}

int tn_future_done(const tn_future *f) { return (f->flags & TN__F_DONE) != 0; }
int tn_future_error(const tn_future *f) { return (f->flags & TN__F_DONE) ? f->err : TN_ESTATE; }
void *tn_future_value(const tn_future *f) { return (f->flags & TN__F_TAKEN) ? NULL : f->value; }
void *tn_future_take(tn_future *f) {
    if (!(f->flags & TN__F_DONE) || (f->flags & TN__F_TAKEN)) return NULL;
    f->flags |= TN__F_TAKEN;
    return f->value;
}

/* ----------------------------------------------------------- combinators */
/* tn_all / tn_any share one record: the inputs, and the output future. */
typedef struct tn__multi {
    tn_loop *loop;
    tn_future *out;
    tn_future **fs;
    void **values;
    size_t *index;
    size_t n, pending;
    int any, finished;
} tn__multi;

static void tn__multi_free(tn__multi *m) {
    size_t i;
    for (i = 0; i < m->n; i++) tn_future_release(m->fs[i]);
    TN_FREE(m->fs);
    TN_FREE(m);
}

/* The output was cancelled by its consumer: cancel every input. */
static void tn__multi_cancelled(tn_future *out, void *arg) {
    tn__multi *m = (tn__multi *)arg;
    size_t i;
    (void)out;
    m->finished = 1;
    for (i = 0; i < m->n; i++) tn_future_cancel(m->fs[i]);
    tn_future_fail(m->out, TN_ECANCELLED); /* ends our producer part */
    m->out = NULL;
}

static void tn__multi_input_done(tn_future *f, void *arg) {
    tn__multi *m = (tn__multi *)arg;
    size_t i, which = 0;
    int err = tn_future_error(f);
    for (i = 0; i < m->n; i++)
        if (m->fs[i] == f) which = i;
    m->pending--;
    if (!m->finished) {
        if (err || m->any) {
            m->finished = 1;
            for (i = 0; i < m->n; i++)
                if (i != which) tn_future_cancel(m->fs[i]);
            if (m->any && m->index) *m->index = which;
            if (err) tn_future_fail(m->out, err);
            else tn_future_resolve_owned(m->out, tn_future_take(f), f->free_value);
            m->out = NULL;
        } else if (m->pending == 0) {
            m->finished = 1;
            if (m->values)
                for (i = 0; i < m->n; i++) m->values[i] = tn_future_take(m->fs[i]);
            tn_future_resolve(m->out, NULL);
            m->out = NULL;
        }
    }
    if (m->pending == 0) tn__multi_free(m);
}

static tn_future *tn__multi_new(tn_loop *l, tn_future **fs, size_t n, int any, void **values,
                                size_t *index) {
    tn__multi *m = (tn__multi *)TN_MALLOC(sizeof *m);
    tn_future *out = tn_future_new(l);
    size_t i;
    if (!m || !out || (n && !(m->fs = (tn_future **)TN_MALLOC(n * sizeof *fs)))) {
        for (i = 0; i < n; i++) tn_future_release(fs[i]);
        if (out) {
            tn_future_fail(out, TN_ENOMEM);
            tn_future_release(out);
        }
        TN_FREE(m);
        return NULL;
    }
    m->loop = l;
    m->out = out;
    m->n = m->pending = n;
    m->values = values;
    m->index = index;
    m->any = any;
    m->finished = 0;
    if (n == 0) {
        m->fs = NULL;
        TN_FREE(m);
        if (any) tn_future_fail(out, TN_EINVAL);
        else tn_future_resolve(out, NULL);
        return out;
    }
    for (i = 0; i < n; i++) {
        m->fs[i] = fs[i];
        tn_future_on_done(fs[i], tn__multi_input_done, m);
    }
    tn_future_on_cancel(out, tn__multi_cancelled, m);
    return out;
}

tn_future *tn_all(tn_loop *l, tn_future **fs, size_t n, void **values) {
    return tn__multi_new(l, fs, n, 0, values, NULL);
}
tn_future *tn_any(tn_loop *l, tn_future **fs, size_t n, size_t *index) {
    return tn__multi_new(l, fs, n, 1, NULL, index);
}

/* sleep: a future and a timer that point at each other. */
static void tn__sleep_fire(tn_loop *l, void *arg) {
    (void)l;
    tn_future_resolve((tn_future *)arg, NULL);
}
static void tn__sleep_cancelled(tn_future *f, void *arg) {
    (void)arg;
    tn_cancel_timer(f->loop, (tn_timer)f->aux);
    tn_future_fail(f, TN_ECANCELLED); /* the timer's producer part ends */
}

tn_future *tn_sleep(tn_loop *l, uint64_t ms) {
    tn_future *f = tn_future_new(l);
    tn_timer t;
    if (!f) return NULL;
    if (tn_call_later(l, ms, tn__sleep_fire, f, &t)) {
        tn_future_fail(f, TN_ENOMEM);
        tn_future_release(f);
        return NULL;
    }
    f->aux = t;
    tn_future_on_cancel(f, tn__sleep_cancelled, NULL);
    return f;
}

/* with_timeout: the output, the input, and a timer; whichever of the input
 * and the timer finishes first settles the output and stops the other. */
typedef struct tn__timeout {
    tn_future *out, *in;
    tn_timer timer;
} tn__timeout;

static void tn__timeout_in_done(tn_future *in, void *arg) {
    tn__timeout *t = (tn__timeout *)arg;
    if (t->out) {
        int err = tn_future_error(in);
        tn_cancel_timer(in->loop, t->timer);
        if (err) tn_future_fail(t->out, err);
        else tn_future_resolve_owned(t->out, tn_future_take(in), in->free_value);
    }
    tn_future_release(in);
    TN_FREE(t);
}

static void tn__timeout_fire(tn_loop *l, void *arg) {
    tn__timeout *t = (tn__timeout *)arg;
    tn_future *out = t->out;
    (void)l;
    t->out = NULL;
    tn_future_fail(out, TN_ETIMEOUT);
    tn_future_cancel(t->in); /* its done callback frees t */
}

static void tn__timeout_out_cancelled(tn_future *out, void *arg) {
    tn__timeout *t = (tn__timeout *)arg;
    t->out = NULL;
    tn_cancel_timer(out->loop, t->timer);
    tn_future_fail(out, TN_ECANCELLED);
    tn_future_cancel(t->in);
}

tn_future *tn_with_timeout(tn_loop *l, tn_future *in, uint64_t timeout_ms) {
    tn__timeout *t = (tn__timeout *)TN_MALLOC(sizeof *t);
    tn_future *out = tn_future_new(l);
    if (!t || !out || tn_call_later(l, timeout_ms, tn__timeout_fire, t, &t->timer)) {
        if (out) {
            tn_future_fail(out, TN_ENOMEM);
            tn_future_release(out);
        }
        TN_FREE(t);
        tn_future_cancel(in);
        tn_future_release(in);
        return NULL;
    }
    t->out = out;
    t->in = in;
    tn_future_on_done(in, tn__timeout_in_done, t);
    tn_future_on_cancel(out, tn__timeout_out_cancelled, t);
    return out;
}

int tn_run_sync(tn_loop *l, tn_future *f, uint64_t timeout_ms, void **value) {
    uint64_t deadline = l->now_ns + timeout_ms * 1000000u;
    int err;
    if (!f) return TN_ENOMEM;
    if (l->running) {
        tn_future_release(f);
        return TN_ESTATE;
    }
    l->running = 1;
    while (!tn_future_done(f)) {
        int wait = -1;
        if (timeout_ms) {
            uint64_t now = tn__clock_ns();
            if (now >= deadline) break;
            wait = (int)((deadline - now + 999999u) / 1000000u);
        }
        err = tn_loop_step(l, wait);
        if (err && err != TN_ENOMEM) break;
    }
    l->running = 0;
    if (!tn_future_done(f)) tn_future_cancel(f);
    err = tn_future_error(f);
    if (err == TN_ECANCELLED && timeout_ms && tn__clock_ns() >= deadline) err = TN_ETIMEOUT;
    if (value) *value = err ? NULL : tn_future_take(f);
    tn_future_release(f);
    return err;
}

/* ------------------------------------------------------------ coroutines */
#define TN__CO_OWNED 1u     /* frame from tn_co_new: freed at the end */
#define TN__CO_CANCELLED 2u /* matches TN_CANCELLED() */
#define TN__CO_WAITING 4u   /* on the TN_WAIT_UNTIL list */

void *tn_co_new(tn_loop *l, size_t size) {
    tn_co *co;
    if (size < sizeof(tn_co)) return NULL;
    co = (tn_co *)TN_MALLOC(size);
    if (!co) return NULL;
    memset(co, 0, size);
    co->loop = l;
    co->flags = TN__CO_OWNED;
    return co;
}

/* Runs the body once; frees the frame when it has ended (then returns 1,
 * and co must not be touched). */
static int tn__co_step(tn_co *co) {
    tn_loop *l = co->loop;
    if (co->fn(co) != TN_CO_DONE) return 0;
    l->ncoroutines--;
    if (co->flags & TN__CO_OWNED) TN_FREE(co);
    return 1;
}

static void tn__co_cancelled(tn_future *f, void *arg) {
    tn_co *co = (tn_co *)arg;
    (void)f;
    co->flags |= TN__CO_CANCELLED;
    /* Cancellation reaches the coroutine at its await: it resumes with
     * TN_ECANCELLED. A yield or a wait resumes by itself. */
    if (co->awaiting) tn_future_cancel(co->awaiting);
}

tn_future *tn_spawn(tn_loop *l, tn_co *co, tn_co_fn fn) {
    tn_future *f = tn_future_new(l);
    if (!f) {
        if (co->flags & TN__CO_OWNED) TN_FREE(co);
        return NULL;
    }
    co->loop = l;
    co->fn = fn;
    co->done = f;
    co->awaiting = NULL;
    co->lc.label = NULL;
    co->lc.line = 0;
    co->flags &= TN__CO_OWNED;
    l->ncoroutines++;
    tn_future_on_cancel(f, tn__co_cancelled, co);
    /* The consumer's part is the caller's: tn__co_step may end the producer's
     * part now, but f lives until the caller lets it go. */
    tn__co_step(co);
    return f;
}

static void tn__co_on_done(tn_future *f, void *arg) {
    tn_co *co = (tn_co *)arg;
    co->awaiting = NULL;
    co->err = tn_future_error(f);
    co->value = co->err ? NULL : tn_future_take(f);
    tn_future_release(f);
    tn__co_step(co);
}

int tn__co_await(tn_co *co, tn_future *f) {
    if (!f) {
        co->err = TN_ENOMEM;
        co->value = NULL;
        return 1;
    }
    if (tn_future_done(f) && !(co->flags & TN__CO_CANCELLED)) {
        /* Already done: continue at once, as awaiting a done asyncio future
         * does. The future's own done callback rule is unaffected. */
        co->err = tn_future_error(f);
        co->value = co->err ? NULL : tn_future_take(f);
        tn_future_release(f);
        return 1;
    }
    co->awaiting = f;
    tn_future_on_done(f, tn__co_on_done, co);
    if (co->flags & TN__CO_CANCELLED) tn_future_cancel(f);
    return 0;
}

static void tn__co_yield_cb(tn_loop *l, void *arg) {
    tn_co *co = (tn_co *)arg;
    (void)l;
    co->err = (co->flags & TN__CO_CANCELLED) ? TN_ECANCELLED : 0;
    co->value = NULL;
    tn__co_step(co);
}

void tn__co_yield(tn_co *co) {
    while (tn_add_callback(co->loop, tn__co_yield_cb, co)) {
        /* Out of memory with a coroutine that must run again: nothing can be
         * dropped here, so wait for memory rather than lose it. */
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

int tn__co_wait(tn_co *co) {
    tn_loop *l = co->loop;
    if (!(co->flags & TN__CO_WAITING)) {
        if (tn__grow((void **)&l->waiters, &l->waiters_cap, l->nwaiters + 1, sizeof *l->waiters)) {
            tn__co_yield(co); /* no room on the list: poll on the next turn */
            return TN_CO_WAITING;
        }
        l->waiters[l->nwaiters++] = co;
        co->flags |= TN__CO_WAITING;
    }
    return TN_CO_WAITING;
}

/* Re-checks every TN_WAIT_UNTIL once. The list is swapped out first, so a
 * coroutine whose condition still fails re-adds itself (to the fresh list)
 * and one whose condition holds goes on and is simply not re-added. If any
 * went on, the next poll does not block: what it did may make another
 * condition true. */
static void tn__run_waiters(tn_loop *l) {
    tn_co **list = l->waiters;
    size_t n = l->nwaiters, i, cap = l->waiters_cap;
    l->waiters_progress = 0;
    if (!n) return;
    l->waiters = l->waiters_spare;
    l->waiters_cap = l->waiters_spare_cap;
    l->nwaiters = 0;
    for (i = 0; i < n; i++) {
        tn_co *co = list[i];
        co->flags &= ~TN__CO_WAITING;
        if (tn__co_step(co) || !(co->flags & TN__CO_WAITING)) l->waiters_progress = 1;
    }
    l->waiters_spare = list;
    l->waiters_spare_cap = cap;
}

int tn__co_return(tn_co *co, int err, void *value, tn_free_fn free_value) {
    tn_future *f = co->done;
    co->done = NULL;
    if (err) tn_future_fail(f, err);
    else tn_future_resolve_owned(f, value, free_value);
    return TN_CO_DONE;
}
/* -------------------------------------------------------------- executor */
struct tn__job {
    tn_work_fn fn;
    void *arg, *result;
    tn_free_fn free_result;
    tn_future *f;
    tn__job *next;
    int err, state; /* 0 queued, 1 running, 2 finished */
};

#ifndef TN_NO_THREADS
struct tn__executor {
    tn_loop *loop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    tn__job *head, *tail; /* queued, FIFO */
    pthread_t *threads;
    int nthreads, shutdown;
};

static void *tn__worker(void *arg) {
    tn__executor *ex = (tn__executor *)arg;
    tn_loop *l = ex->loop;
    for (;;) {
        tn__job *j;
        int wake;
        pthread_mutex_lock(&ex->lock);
        while (!ex->head && !ex->shutdown) pthread_cond_wait(&ex->cond, &ex->lock);
        if (!ex->head) { /* shutdown and nothing left */
            pthread_mutex_unlock(&ex->lock);
            return NULL;
        }
        j = ex->head;
        ex->head = j->next;
        if (!ex->head) ex->tail = NULL;
        j->state = 1;
        pthread_mutex_unlock(&ex->lock);

        j->result = NULL;
        j->err = j->fn(j->arg, &j->result);

        /* Hand the job back to the loop thread; only it touches futures. */
        pthread_mutex_lock(&l->ts_lock);
        j->state = 2;
        j->next = l->jobs_done;
        l->jobs_done = j;
        wake = !l->wake_pending;
        l->wake_pending = 1;
        pthread_mutex_unlock(&l->ts_lock);
        if (wake) tn__wake(l);
    }
}

static int tn__executor_start(tn_loop *l) {
    tn__executor *ex = (tn__executor *)TN_MALLOC(sizeof *ex);
    sigset_t all, old;
    int i;
    if (!ex) return TN_ENOMEM;
    memset(ex, 0, sizeof *ex);
    ex->loop = l;
    ex->threads = (pthread_t *)TN_MALLOC((size_t)l->executor_threads * sizeof(pthread_t));
    if (!ex->threads || pthread_mutex_init(&ex->lock, NULL)) {
        TN_FREE(ex->threads);
        TN_FREE(ex);
        return TN_ENOMEM;
    }
    pthread_cond_init(&ex->cond, NULL);
    /* Workers block every signal, so signals reach the loop's thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (i = 0; i < l->executor_threads; i++) {
        if (pthread_create(&ex->threads[i], NULL, tn__worker, ex)) break;
        ex->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    l->executor = ex;
    if (ex->nthreads == 0) {
        tn__executor_free(l);
        return -EAGAIN;
    }
    return 0;
}

static void tn__job_cancelled(tn_future *f, void *arg) {
    tn__job *j = (tn__job *)arg;
    tn__executor *ex = f->loop->executor;
    tn__job **pp, *prev = NULL;
    pthread_mutex_lock(&ex->lock);
    if (j->state == 0) {
        for (pp = &ex->head; *pp; prev = *pp, pp = &(*pp)->next) {
            if (*pp != j) continue;
            *pp = j->next;
            if (ex->tail == j) ex->tail = prev;
            break;
        }
        pthread_mutex_unlock(&ex->lock);
        tn_future_fail(j->f, TN_ECANCELLED);
        f->loop->njobs--;
        TN_FREE(j);
        return;
    }
    /* Running: it finishes on its own; its result is then freed. */
    pthread_mutex_unlock(&ex->lock);
}

static void tn__jobs_complete(tn_loop *l, tn__job *done) {
    tn__job *rev = NULL;
    while (done) { /* the list is LIFO; deliver in completion order */
        tn__job *n = done->next;
        done->next = rev;
        rev = done;
        done = n;
    }
    while (rev) {
        tn__job *j = rev;
        rev = j->next;
        if (j->err) {
            if (j->result && j->free_result) j->free_result(j->result);
            tn_future_fail(j->f, j->err);
        } else {
            tn_future_resolve_owned(j->f, j->result, j->free_result);
        }
        l->njobs--;
        TN_FREE(j);
    }
}

tn_future *tn_run_in_executor(tn_loop *l, tn_work_fn fn, void *arg, tn_free_fn free_result) {
    tn__job *j;
    tn_future *f;
    tn__executor *ex;
    if (!l->executor && tn__executor_start(l)) return NULL;
    ex = l->executor;
    j = (tn__job *)TN_MALLOC(sizeof *j);
    f = tn_future_new(l);
    if (!j || !f) {
        TN_FREE(j);
        if (f) {
            tn_future_fail(f, TN_ENOMEM);
            tn_future_release(f);
        }
        return NULL;
    }
    memset(j, 0, sizeof *j);
    j->fn = fn;
    j->arg = arg;
    j->free_result = free_result;
    j->f = f;
    tn_future_on_cancel(f, tn__job_cancelled, j);
    l->njobs++;
    pthread_mutex_lock(&ex->lock);
    if (ex->tail) ex->tail->next = j;
    else ex->head = j;
    ex->tail = j;
    pthread_cond_signal(&ex->cond);
    pthread_mutex_unlock(&ex->lock);
    return f;
}

/* Queued jobs are cancelled; running ones are waited for (a thread cannot be
 * stopped safely), then every result is delivered or freed. */
static void tn__executor_free(tn_loop *l) {
    tn__executor *ex = l->executor;
    tn__job *q;
    int i;
    if (!ex) return;
    pthread_mutex_lock(&ex->lock);
    q = ex->head;
    ex->head = ex->tail = NULL;
    ex->shutdown = 1;
    pthread_cond_broadcast(&ex->cond);
    pthread_mutex_unlock(&ex->lock);
    for (i = 0; i < ex->nthreads; i++) pthread_join(ex->threads[i], NULL);
    while (q) {
        tn__job *n = q->next;
        tn_future_on_cancel(q->f, NULL, NULL); /* we are the producer here */
        tn_future_cancel(q->f);
        tn_future_fail(q->f, TN_ECANCELLED);
        l->njobs--;
        TN_FREE(q);
        q = n;
    }
    tn__jobs_complete(l, l->jobs_done);
    l->jobs_done = NULL;
    pthread_cond_destroy(&ex->cond);
    pthread_mutex_destroy(&ex->lock);
    TN_FREE(ex->threads);
    TN_FREE(ex);
    l->executor = NULL;
}

static void tn__drain_threadsafe(tn_loop *l) {
    tn__cb *cbs;
    size_t n, cap, i;
    tn__job *done;
    pthread_mutex_lock(&l->ts_lock);
    cbs = l->ts_cbs;
    n = l->ts_count;
    cap = l->ts_cap;
    l->ts_cbs = NULL;
    l->ts_count = l->ts_cap = 0;
    done = l->jobs_done;
    l->jobs_done = NULL;
    l->wake_pending = 0;
    pthread_mutex_unlock(&l->ts_lock);
    (void)cap;
    for (i = 0; i < n; i++)
        if (tn_add_callback(l, cbs[i].fn, cbs[i].arg)) cbs[i].fn(l, cbs[i].arg); /* no room: run now */
    TN_FREE(cbs);
    tn__jobs_complete(l, done);
}
#else
tn_future *tn_run_in_executor(tn_loop *l, tn_work_fn fn, void *arg, tn_free_fn free_result) {
    tn_future *f = tn_future_new(l);
    void *result = NULL;
    int err;
    if (!f) return NULL;
    err = fn(arg, &result);
    if (err) {
        if (result && free_result) free_result(result);
        tn_future_fail(f, err);
    } else {
        tn_future_resolve_owned(f, result, free_result);
    }
    return f;
}
static void tn__executor_free(tn_loop *l) { (void)l; }
static void tn__drain_threadsafe(tn_loop *l) { (void)l; }
#endif
/* ---------------------------------------------------------- Event, Queue */
/* A FIFO of waiting futures (each with an item, for queue putters). The
 * waiter's future is produced by the Event/Queue; its cancel hook takes it
 * off the list at once, so a cancelled get never swallows an item. */
typedef struct tn__waiter {
    tn_future *f;
    void *item;
} tn__waiter;

typedef struct tn__waitlist {
    tn__waiter *w;
    size_t head, n, cap; /* live entries: w[head .. head+n) */
} tn__waitlist;

static int tn__waitlist_push(tn__waitlist *wl, tn_future *f, void *item) {
    if (wl->head + wl->n == wl->cap && wl->head) { /* slide down before growing */
        memmove(wl->w, wl->w + wl->head, wl->n * sizeof *wl->w);
        wl->head = 0;
    }
    if (tn__grow((void **)&wl->w, &wl->cap, wl->head + wl->n + 1, sizeof *wl->w)) return TN_ENOMEM;
    wl->w[wl->head + wl->n].f = f;
    wl->w[wl->head + wl->n].item = item;
    wl->n++;
    return 0;
}

static tn__waiter tn__waitlist_pop(tn__waitlist *wl) {
    tn__waiter w = wl->w[wl->head++];
    if (--wl->n == 0) wl->head = 0;
    return w;
}

static void tn__waitlist_remove(tn__waitlist *wl, tn_future *f) {
    size_t i;
    for (i = wl->head; i < wl->head + wl->n; i++) {
        if (wl->w[i].f != f) continue;
        memmove(wl->w + i, wl->w + i + 1, (wl->head + wl->n - i - 1) * sizeof *wl->w);
        if (--wl->n == 0) wl->head = 0;
        return;
    }
}

/* Fails every waiter (on free). */
static void tn__waitlist_fail_all(tn__waitlist *wl, int err) {
    while (wl->n) {
        tn__waiter w = tn__waitlist_pop(wl);
        tn_future_on_cancel(w.f, NULL, NULL);
        tn_future_fail(w.f, err);
    }
    TN_FREE(wl->w);
    wl->w = NULL;
    wl->cap = 0;
}

/* A pending future registered on wl, whose cancellation removes it. */
static tn_future *tn__waitlist_wait(tn_loop *l, tn__waitlist *wl, void *item, tn_future_fn on_cancel,
                                    void *owner) {
    tn_future *f = tn_future_new(l);
    if (!f) return NULL;
    if (tn__waitlist_push(wl, f, item)) {
        tn_future_fail(f, TN_ENOMEM);
        tn_future_release(f);
        return NULL;
    }
    tn_future_on_cancel(f, on_cancel, owner);
    return f;
}

static tn_future *tn__future_resolved(tn_loop *l, void *value) {
    tn_future *f = tn_future_new(l);
    if (f) tn_future_resolve(f, value);
    return f;
}

struct tn_event {
    tn_loop *loop;
    tn__waitlist waiters;
    int set;
};

tn_event *tn_event_new(tn_loop *l) {
    tn_event *ev = (tn_event *)TN_MALLOC(sizeof *ev);
    if (!ev) return NULL;
    memset(ev, 0, sizeof *ev);
    ev->loop = l;
    return ev;
}

void tn_event_free(tn_event *ev) {
    if (!ev) return;
    tn__waitlist_fail_all(&ev->waiters, TN_ECANCELLED);
    TN_FREE(ev);
}

void tn_event_set(tn_event *ev) {
    ev->set = 1;
    while (ev->waiters.n) {
        tn__waiter w = tn__waitlist_pop(&ev->waiters);
        tn_future_on_cancel(w.f, NULL, NULL);
        tn_future_resolve(w.f, NULL);
    }
}
void tn_event_clear(tn_event *ev) { ev->set = 0; }
int tn_event_is_set(const tn_event *ev) { return ev->set; }

static void tn__event_wait_cancelled(tn_future *f, void *arg) {
    tn__waitlist_remove(&((tn_event *)arg)->waiters, f);
    tn_future_fail(f, TN_ECANCELLED);
}

tn_future *tn_event_wait(tn_event *ev) {
    if (ev->set) return tn__future_resolved(ev->loop, NULL);
    return tn__waitlist_wait(ev->loop, &ev->waiters, NULL, tn__event_wait_cancelled, ev);
}

struct tn_queue {
    tn_loop *loop;
    void **items; /* ring */
    size_t head, n, cap, maxsize, unfinished;
    tn__waitlist getters, putters, joiners;
};

tn_queue *tn_queue_new(tn_loop *l, size_t maxsize) {
    tn_queue *q = (tn_queue *)TN_MALLOC(sizeof *q);
    if (!q) return NULL;
    memset(q, 0, sizeof *q);
    q->loop = l;
    q->maxsize = maxsize;
    return q;
}

void tn_queue_free(tn_queue *q) {
    if (!q) return;
    tn__waitlist_fail_all(&q->getters, TN_ECANCELLED);
    tn__waitlist_fail_all(&q->putters, TN_ECANCELLED);
    tn__waitlist_fail_all(&q->joiners, TN_ECANCELLED);
    TN_FREE(q->items);
    TN_FREE(q);
}

size_t tn_queue_size(const tn_queue *q) { return q->n; }

static int tn__queue_push(tn_queue *q, void *item) {
    if (q->n == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 16, i;
        void **ni = (void **)TN_MALLOC(ncap * sizeof *ni);
        if (!ni) return TN_ENOMEM;
        for (i = 0; i < q->n; i++) ni[i] = q->items[(q->head + i) % q->cap];
        TN_FREE(q->items);
        q->items = ni;
        q->cap = ncap;
        q->head = 0;
    }
    q->items[(q->head + q->n) % q->cap] = item;
    q->n++;
    return 0;
}

static void *tn__queue_shift(tn_queue *q) {
    void *item = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    return item;
}

/* Accepts an item: straight to the oldest getter if one waits. */
static int tn__queue_accept(tn_queue *q, void *item) {
    if (q->getters.n) {
        tn__waiter g = tn__waitlist_pop(&q->getters);
        tn_future_on_cancel(g.f, NULL, NULL);
        tn_future_resolve(g.f, item);
    } else if (tn__queue_push(q, item)) {
        return TN_ENOMEM;
    }
    q->unfinished++;
    return 0;
}

int tn_queue_try_put(tn_queue *q, void *item) {
    if (q->maxsize && q->n >= q->maxsize) return TN_EFULL;
    return tn__queue_accept(q, item);
}

static void tn__queue_put_cancelled(tn_future *f, void *arg) {
    tn__waitlist_remove(&((tn_queue *)arg)->putters, f);
    tn_future_fail(f, TN_ECANCELLED);
}
static void tn__queue_get_cancelled(tn_future *f, void *arg) {
    tn__waitlist_remove(&((tn_queue *)arg)->getters, f);
    tn_future_fail(f, TN_ECANCELLED);
}
static void tn__queue_join_cancelled(tn_future *f, void *arg) {
    tn__waitlist_remove(&((tn_queue *)arg)->joiners, f);
    tn_future_fail(f, TN_ECANCELLED);
}

tn_future *tn_queue_put(tn_queue *q, void *item) {
    int rc = tn_queue_try_put(q, item);
    if (rc == 0) return tn__future_resolved(q->loop, NULL);
    if (rc != TN_EFULL) return NULL;
    return tn__waitlist_wait(q->loop, &q->putters, item, tn__queue_put_cancelled, q);
}

int tn_queue_try_get(tn_queue *q, void **item) {
    if (!q->n) return TN_EEMPTY;
    *item = tn__queue_shift(q);
    /* Room was made: the oldest blocked putter's item goes in. */
    if (q->putters.n) {
        tn__waiter p = tn__waitlist_pop(&q->putters);
        tn__queue_push(q, p.item); /* cannot fail: a slot was just freed */
        q->unfinished++;
        tn_future_on_cancel(p.f, NULL, NULL);
        tn_future_resolve(p.f, NULL);
    }
    return 0;
}

tn_future *tn_queue_get(tn_queue *q) {
    void *item;
    if (tn_queue_try_get(q, &item) == 0) return tn__future_resolved(q->loop, item);
    return tn__waitlist_wait(q->loop, &q->getters, NULL, tn__queue_get_cancelled, q);
}

int tn_queue_task_done(tn_queue *q) {
    if (!q->unfinished) return TN_ESTATE;
    if (--q->unfinished == 0) {
        while (q->joiners.n) {
            tn__waiter w = tn__waitlist_pop(&q->joiners);
            tn_future_on_cancel(w.f, NULL, NULL);
            tn_future_resolve(w.f, NULL);
        }
    }
    return 0;
}

tn_future *tn_queue_join(tn_queue *q) {
    if (!q->unfinished) return tn__future_resolved(q->loop, NULL);
    return tn__waitlist_wait(q->loop, &q->joiners, NULL, tn__queue_join_cancelled, q);
}

#ifdef __cplusplus
}
#endif
#endif /* TORNADO_IMPLEMENTATION_DONE */
#endif /* TORNADO_IMPLEMENTATION */

/*
MIT License

Copyright (c) 2026 The tornado.h authors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
*/
