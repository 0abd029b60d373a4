/* pg.h - PostgreSQL on the tornado.h loop through libpq's non-blocking
 * API: a small connection pool, parameterised queries, a timeout per
 * query, and cancellation that reaches the server. Header-only: copy it
 * next to tornado.h, include it after tornado.h, link -lpq.
 *
 *     pg_pool *pool;
 *     pg_pool_new(loop, "host=127.0.0.1 dbname=app", NULL, &pool);
 *     ...
 *     TN_AWAIT(co, pg_query(pool, "SELECT title FROM todos WHERE id = $1", 1, params, 0));
 *     if (co->err) ...       // no answer: TN_ETIMEOUT, TN_ECANCELLED, TN_ECLOSED, PG_ECONNECT
 *     res = co->value;       // a PGresult*, yours: PQclear(res)
 *     if (!pg_ok(res)) ... PQresultErrorMessage(res) ...   // the server said no
 *
 * How it plugs in: libpq is driven by hand (PQconnectStart/PQconnectPoll,
 * PQsendQueryParams, PQflush, PQconsumeInput, PQisBusy, PQgetResult) and
 * each time it would block, the query's coroutine awaits its socket with
 * tn_wait_fd. Nothing here blocks the loop except PQcancel, which opens a
 * connection of its own and waits for it: that runs on the executor.
 *
 * The pool: `size` connection slots (4), each opened at its first use; a
 * query takes a free slot or waits for one in FIFO order (tn_queue). A slot
 * whose connection broke, or that a drain could not bring back to idle, is
 * closed and reopened by its next query.
 * Queries: one statement, PARAMETERS ONLY: $1..$n, sent as text apart from
 * the SQL (a NULL is SQL NULL). Never build SQL from input. Each query runs
 * on whichever slot is free, in autocommit: a transaction must be a single
 * statement (a CTE, or a function).
 * Timeout: timeout_ms per call (0: the pool's query_timeout_ms, 10 s),
 * counted from the call, waiting for a slot included. Cancellation: when
 * the query's future is cancelled (tn_with_timeout, or the coroutine that
 * awaits it is: an HTTP client that went away) while the server runs the
 * statement, the statement is cancelled on the server (PQcancel on the
 * executor), the connection is drained (the error the cancel causes is
 * read and dropped) and goes back to the pool clean. The future fails only
 * once that is done, so a slot is never reused mid-statement.
 * Memory: while a query runs, its frame (128 bytes on x86-64) and one
 * copy of its SQL and parameters; a PGresult is the caller's. */
#ifndef TN_EXAMPLE_PG_H
#define TN_EXAMPLE_PG_H

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define PG__FN static __attribute__((unused))
#else
#define PG__FN static
#endif

#define PG_ECONNECT (-2101) /* could not connect (the reason went to stderr) */

typedef struct pg_pool_opts {
    int size;                  /* connections: 4 */
    unsigned query_timeout_ms; /* a query's default timeout: 10000 */
    unsigned drain_timeout_ms; /* for the cancel and the drain after it: 5000 */
    const char *app_name;      /* application_name unless conninfo sets one: "tornado.h" */
} pg_pool_opts;

typedef struct pg_pool_stats {
    unsigned long long queries, cancels, timeouts, reconnects;
} pg_pool_stats;

typedef struct pg_slot {
    PGconn *conn; /* NULL: not connected (opened by the next query) */
} pg_slot;

typedef struct pg_pool {
    tn_loop *loop;
    char *conninfo, *app_name;
    pg_pool_opts opts;
    pg_slot *slots;
    tn_queue *idle; /* free slots; queries wait on it */
    int refs;       /* 1 for the owner + one per query running */
    pg_pool_stats stats;
} pg_pool;

/* A result the server answered with success (rows or a command's tag). */
PG__FN int pg_ok(const PGresult *r) {
    ExecStatusType s = PQresultStatus(r);
    return s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK;
}
PG__FN void pg_result_free(void *r) { PQclear((PGresult *)r); }

static char *pg__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void pg__quiet(void *arg, const char *message) { /* NOTICEs are not errors */
    (void)arg;
    (void)message;
}

static void pg__pool_destroy(pg_pool *p) {
    void *slot;
    while (tn_queue_try_get(p->idle, &slot) == 0)
        if (((pg_slot *)slot)->conn) PQfinish(((pg_slot *)slot)->conn);
    tn_queue_free(p->idle);
    free(p->slots);
    free(p->conninfo);
    free(p->app_name);
    free(p);
}

/* A pool over conninfo (a libpq connection string or URI; copied). No
 * connection opens until a query needs one. 0 or TN_ENOMEM. */
PG__FN int pg_pool_new(tn_loop *loop, const char *conninfo, const pg_pool_opts *opts, pg_pool **out) {
    pg_pool *p = (pg_pool *)calloc(1, sizeof *p);
    int i;
    *out = NULL;
    if (!p) return TN_ENOMEM;
    if (opts) p->opts = *opts;
    if (p->opts.size <= 0) p->opts.size = 4;
    if (!p->opts.query_timeout_ms) p->opts.query_timeout_ms = 10000;
    if (!p->opts.drain_timeout_ms) p->opts.drain_timeout_ms = 5000;
    p->loop = loop;
    p->refs = 1;
    p->conninfo = pg__strdup(conninfo);
    p->app_name = pg__strdup(p->opts.app_name ? p->opts.app_name : "tornado.h");
    p->slots = (pg_slot *)calloc((size_t)p->opts.size, sizeof *p->slots);
    p->idle = tn_queue_new(loop, 0);
    if (!p->conninfo || !p->app_name || !p->slots || !p->idle) {
        if (p->idle) tn_queue_free(p->idle);
        free(p->slots);
        free(p->conninfo);
        free(p->app_name);
        free(p);
        return TN_ENOMEM;
    }
    for (i = 0; i < p->opts.size; i++)
        if (tn_queue_try_put(p->idle, &p->slots[i])) {
            pg__pool_destroy(p);
            return TN_ENOMEM;
        }
    *out = p;
    return 0;
}

/* Frees the pool once the queries under way have ended (at once if none
 * runs): the owner's part ends here. Do not start queries after it. */
PG__FN void pg_pool_free(pg_pool *p) {
    if (p && --p->refs == 0) pg__pool_destroy(p);
}

/* Queries under way, a drain after a cancel included. */
PG__FN int pg_pool_queries(const pg_pool *p) { return p->refs - 1; }

/* --- one query: a coroutine over its slot --- */
typedef struct pg__query {
    tn_co co;
    pg_pool *pool;
    pg_slot *slot;
    uint64_t deadline;
    PGresult *result;
    int wait, err;
    unsigned left;
    const char *sql;
    int nparams;
    const char **params; /* into this allocation, after the frame */
} pg__query;

/* ms left before the deadline (at least 1), or 0 once it has passed. */
static unsigned pg__left(pg__query *q) {
    uint64_t now = tn_time_ms(q->co.loop);
    return now >= q->deadline ? 0 : (unsigned)(q->deadline - now);
}

/* Starts connecting the slot: TN_WRITE (what to wait for first) or PG_ECONNECT. */
static int pg__connect_start(pg__query *q) {
    const char *keys[] = {"fallback_application_name", "dbname", NULL};
    const char *vals[3];
    vals[0] = q->pool->app_name;
    vals[1] = q->pool->conninfo;
    vals[2] = NULL;
    q->slot->conn = PQconnectStartParams(keys, vals, 1);
    if (!q->slot->conn) return TN_ENOMEM;
    if (PQstatus(q->slot->conn) == CONNECTION_BAD || PQsetnonblocking(q->slot->conn, 1) != 0) return PG_ECONNECT;
    PQsetNoticeProcessor(q->slot->conn, pg__quiet, NULL);
    return TN_WRITE; /* "as if PQconnectPoll had returned PGRES_POLLING_WRITING" */
}

/* One step of the connection: what to wait for, 0 when connected, or PG_ECONNECT. */
static int pg__connect_step(PGconn *c) {
    PostgresPollingStatusType s = PQconnectPoll(c);
    if (s == PGRES_POLLING_READING) return TN_READ;
    if (s == PGRES_POLLING_WRITING) return TN_WRITE;
    return s == PGRES_POLLING_OK ? 0 : PG_ECONNECT;
}

/* One step of the conversation after PQsendQueryParams: sends what is
 * left, reads what came, collects results. What to wait for, 0 once
 * PQgetResult says the statement is over, or TN_ECLOSED. The first result
 * is kept (one statement: one result), any others are dropped. */
static int pg__step(PGconn *c, PGresult **result) {
    int sent;
    if (!PQconsumeInput(c)) return TN_ECLOSED;
    if ((sent = PQflush(c)) < 0) return TN_ECLOSED;
    if (sent == 1) return TN_READ | TN_WRITE; /* the server may be waiting for us to read */
    while (!PQisBusy(c)) {
        PGresult *r = PQgetResult(c);
        if (!r) return 0;
        if (!*result) *result = r;
        else PQclear(r);
    }
    return TN_READ;
}

static int pg__cancel_work(void *arg, void **result) {
    char errbuf[256];
    *result = NULL;
    return PQcancel((PGcancel *)arg, errbuf, (int)sizeof errbuf) ? 0 : TN_ECLOSED;
}
static void pg__cancel_free(void *arg) { PQfreeCancel((PGcancel *)arg); }

/* Asks the server to cancel the statement: PQcancel blocks (it connects
 * and waits for the server), so it runs on the executor. NULL: no memory. */
static tn_future *pg__cancel(pg__query *q) {
    PGcancel *c = PQgetCancel(q->slot->conn);
    return c ? tn_run_in_executor_owned(q->co.loop, pg__cancel_work, c, pg__cancel_free, NULL) : NULL;
}

static void pg__close_slot(pg__query *q) {
    if (q->slot->conn) PQfinish(q->slot->conn);
    q->slot->conn = NULL;
}

/* The query's end: its slot back to the pool (closed unless idle and
 * healthy), the pool's reference dropped. */
static void pg__end(pg__query *q) {
    if (q->slot) {
        PGconn *c = q->slot->conn;
        if (c && (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE)) pg__close_slot(q);
        if (tn_queue_try_put(q->pool->idle, q->slot)) pg__close_slot(q); /* no memory: the slot is lost */
        q->slot = NULL;
    }
    pg_pool_free(q->pool);
}

#define PG__FAIL(co, q, e)                     \
    do {                                       \
        int pg_err_ = (e);                     \
        if ((q)->result) PQclear((q)->result); \
        (q)->result = NULL;                    \
        pg__end(q);                            \
        TN_FAIL(co, pg_err_);                  \
    } while (0)

static int pg__query_co(tn_co *co) {
    pg__query *q = (pg__query *)co;
    TN_BEGIN(co);
    /* a slot, in FIFO order */
    if (!(q->left = pg__left(q))) PG__FAIL(co, q, TN_ETIMEOUT);
    TN_AWAIT(co, tn_with_timeout(co->loop, tn_queue_get(q->pool->idle), q->left));
    if (co->err) PG__FAIL(co, q, co->err);
    q->slot = (pg_slot *)co->value;
    /* connected? (a new slot, or one whose connection was closed) */
    if (!q->slot->conn) {
        q->pool->stats.reconnects++;
        for (q->wait = pg__connect_start(q); q->wait > 0; q->wait = pg__connect_step(q->slot->conn)) {
            if (!(q->left = pg__left(q))) {
                q->wait = TN_ETIMEOUT;
                break;
            }
            TN_AWAIT(co, tn_wait_fd(co->loop, PQsocket(q->slot->conn), (unsigned)q->wait, q->left));
            if (co->err) {
                q->wait = co->err;
                break;
            }
        }
        if (q->wait) {
            if (q->wait == PG_ECONNECT) fprintf(stderr, "pg: connect: %s", PQerrorMessage(q->slot->conn));
            pg__close_slot(q); /* a half-open connection is no use */
            PG__FAIL(co, q, q->wait);
        }
    }
    /* the statement */
    q->pool->stats.queries++;
    if (!PQsendQueryParams(q->slot->conn, q->sql, q->nparams, NULL, q->params, NULL, NULL, 0)) {
        pg__close_slot(q); /* broken: reopened by the slot's next query */
        PG__FAIL(co, q, TN_ECLOSED);
    }
    while ((q->wait = pg__step(q->slot->conn, &q->result)) > 0) {
        if (!(q->left = pg__left(q))) {
            q->err = TN_ETIMEOUT;
            break;
        }
        TN_AWAIT(co, tn_wait_fd(co->loop, PQsocket(q->slot->conn), (unsigned)q->wait, q->left));
        if (co->err) {
            q->err = co->err;
            break;
        }
    }
    if (q->wait < 0) {
        pg__close_slot(q);
        PG__FAIL(co, q, q->wait);
    }
    if (!q->err) {
        PGresult *r = q->result;
        q->result = NULL;
        pg__end(q);
        if (!r) TN_FAIL(co, TN_ECLOSED);
        TN_RETURN_OWNED(co, r, pg_result_free);
    }
    /* Cancelled, or out of time, while the server runs the statement:
     * cancel it there (awaits work again once a cancellation has been
     * delivered), then drain: the statement ends, with the cancel's error
     * or on its own, and what it sends is read and dropped. */
    if (q->err == TN_ETIMEOUT) q->pool->stats.timeouts++;
    else q->pool->stats.cancels++;
    q->deadline = tn_time_ms(co->loop) + q->pool->opts.drain_timeout_ms;
    TN_AWAIT(co, tn_with_timeout(co->loop, pg__cancel(q), q->pool->opts.drain_timeout_ms));
    while ((q->wait = pg__step(q->slot->conn, &q->result)) > 0) {
        if (!(q->left = pg__left(q))) break;
        TN_AWAIT(co, tn_wait_fd(co->loop, PQsocket(q->slot->conn), (unsigned)q->wait, q->left));
        if (co->err) break;
    }
    if (q->wait != 0) pg__close_slot(q); /* still busy, or broken: not reusable */
    PG__FAIL(co, q, q->err);
    TN_END(co);
}

/* Runs sql with nparams text parameters (copied now; NULL entries are SQL
 * NULL) on a pooled connection. Resolves with a PGresult* whenever the
 * server answered (yours: PQclear, freed for you if not taken; check
 * pg_ok). Fails without an answer: TN_ETIMEOUT (timeout_ms passed; 0:
 * the pool's), TN_ECANCELLED, TN_ECLOSED (the connection broke),
 * PG_ECONNECT, TN_ENOMEM. NULL only on TN_ENOMEM. */
PG__FN tn_future *pg_query(pg_pool *p, const char *sql, int nparams, const char *const *params, unsigned timeout_ms) {
    size_t size = sizeof(pg__query) + (size_t)(nparams > 0 ? nparams : 0) * sizeof(char *) + strlen(sql) + 1, off;
    pg__query *q;
    char *s;
    int i;
    for (i = 0; i < nparams; i++)
        if (params[i]) size += strlen(params[i]) + 1;
    if (!(q = (pg__query *)tn_co_new(p->loop, size))) return NULL;
    q->pool = p;
    p->refs++;
    q->deadline = tn_time_ms(p->loop) + (timeout_ms ? timeout_ms : p->opts.query_timeout_ms);
    q->nparams = nparams;
    q->params = (const char **)(void *)(q + 1);
    s = (char *)(q->params + (nparams > 0 ? nparams : 0));
    for (i = 0; i < nparams; i++) {
        q->params[i] = NULL;
        if (!params[i]) continue;
        off = strlen(params[i]) + 1;
        memcpy(s, params[i], off);
        q->params[i] = s;
        s += off;
    }
    strcpy(s, sql);
    q->sql = s;
    return tn_spawn(p->loop, &q->co, pg__query_co);
}

#endif
