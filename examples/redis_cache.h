/* redis_cache.h - a tn_cache in Redis, over hiredis's async API on the
 * tornado.h loop. Header-only: copy it next to tornado.h, include it after
 * tornado.h, link -lhiredis.
 *
 *     tn_cache_opts o = {0};
 *     tn_cache *cache;
 *     redis_cache_connect(loop, "127.0.0.1", 6379, "app:", &o);  // fills backend + impl
 *     o.ttl_ms = 30000;
 *     tn_cache_new(loop, &o, &cache);  // tn_cache_fetch, _delete... now go to Redis
 *
 * Two parts. First the adapter (redisTornadoAttach), in the shape of
 * hiredis's own adapters/libuv.h and adapters/ae.h: hiredis says when it
 * wants to read or write through five hooks (addRead, delRead, addWrite,
 * delWrite, cleanup); they map onto one tn_add_handler registration whose
 * interest tn_update_handler changes. Then the tn_cache_backend: GET, SET
 * with PX (the TTL), DEL, and prefix deletion as SCAN MATCH prefix* + DEL.
 * Values are binary-safe (%b). Processes sharing a Redis share the cache:
 * a delete in one is seen by every other.
 * Keys are stored under a namespace ns (say "app:"), so invalidating
 * everything ("" prefix) deletes ns* only; with ns "" it is FLUSHDB (the
 * database is then the cache's alone). SCAN + DEL is not atomic: a key set
 * while it runs may stay.
 * Connection: one, opened now (non-blocking; a host NAME is resolved by
 * hiredis, blocking: give an address). When it breaks, pending commands
 * fail (TN_ECLOSED), and the next command reconnects, at most once a
 * second: meanwhile commands fail at once. A cache counts a failed lookup
 * as a miss, so while Redis is away every fetch computes its value.
 * Errors: TN_ECLOSED (no connection), TN_EINVAL (Redis answered an error),
 * TN_ENOMEM. */
#ifndef TN_EXAMPLE_REDIS_CACHE_H
#define TN_EXAMPLE_REDIS_CACHE_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define RC__FN static __attribute__((unused))
#else
#define RC__FN static
#endif

/* ---------------------------------------------------------------------
 * The adapter: hiredis's event hooks on a tn_loop
 * ------------------------------------------------------------------- */
typedef struct redisTornadoEvents {
    redisAsyncContext *context;
    tn_loop *loop;
    int fd;
    unsigned events;  /* TN_READ | TN_WRITE wanted now */
    int dispatching;  /* inside redisTornadoHandle */
    int dead;         /* cleanup came while dispatching: free on the way out */
} redisTornadoEvents;

/* hiredis may free the context (and call cleanup) inside HandleRead, so
 * the write half runs only if it is still there. */
static void redisTornadoHandle(tn_loop *loop, int fd, unsigned events, void *arg) {
    redisTornadoEvents *e = (redisTornadoEvents *)arg;
    (void)loop;
    (void)fd;
    e->dispatching = 1;
    if (events & TN_READ) redisAsyncHandleRead(e->context);
    if (!e->dead && (events & TN_WRITE)) redisAsyncHandleWrite(e->context);
    e->dispatching = 0;
    if (e->dead) free(e);
}

static void redisTornadoUpdate(redisTornadoEvents *e, unsigned events) {
    if (events == e->events) return;
    e->events = events;
    tn_update_handler(e->loop, e->fd, events); /* 0 pauses the fd */
}
static void redisTornadoAddRead(void *p) {
    redisTornadoEvents *e = (redisTornadoEvents *)p;
    redisTornadoUpdate(e, e->events | TN_READ);
}
static void redisTornadoDelRead(void *p) {
    redisTornadoEvents *e = (redisTornadoEvents *)p;
    redisTornadoUpdate(e, e->events & ~TN_READ);
}
static void redisTornadoAddWrite(void *p) {
    redisTornadoEvents *e = (redisTornadoEvents *)p;
    redisTornadoUpdate(e, e->events | TN_WRITE);
}
static void redisTornadoDelWrite(void *p) {
    redisTornadoEvents *e = (redisTornadoEvents *)p;
    redisTornadoUpdate(e, e->events & ~TN_WRITE);
}
static void redisTornadoCleanup(void *p) {
    redisTornadoEvents *e = (redisTornadoEvents *)p;
    tn_remove_handler(e->loop, e->fd);
    e->context = NULL;
    if (e->dispatching) e->dead = 1;
    else free(e);
}

/* Puts ac on loop: REDIS_OK, or REDIS_ERR (already attached, no memory,
 * or the fd could not be registered). */
RC__FN int redisTornadoAttach(redisAsyncContext *ac, tn_loop *loop) {
    redisTornadoEvents *e;
    if (ac->ev.data != NULL) return REDIS_ERR;
    if (!(e = (redisTornadoEvents *)calloc(1, sizeof *e))) return REDIS_ERR;
    e->context = ac;
    e->loop = loop;
    e->fd = ac->c.fd;
    if (tn_add_handler(loop, e->fd, 0, redisTornadoHandle, e) != 0) { /* paused until hiredis asks */
        free(e);
        return REDIS_ERR;
    }
    ac->ev.addRead = redisTornadoAddRead;
    ac->ev.delRead = redisTornadoDelRead;
    ac->ev.addWrite = redisTornadoAddWrite;
    ac->ev.delWrite = redisTornadoDelWrite;
    ac->ev.cleanup = redisTornadoCleanup;
    ac->ev.data = e;
    return REDIS_OK;
}

/* ---------------------------------------------------------------------
 * The cache backend
 * ------------------------------------------------------------------- */
typedef struct redis_cache {
    tn_loop *loop;
    redisAsyncContext *ac; /* NULL: not connected */
    char *host;
    int port;
    char *ns;
    size_t ns_len;
    uint64_t retry_at; /* after a failure, no reconnect before this (tn_time_ms) */
} redis_cache;

static void rc__lost(redis_cache *rc, const redisAsyncContext *ac) {
    if (ac->err) fprintf(stderr, "redis %s:%d: %s\n", rc->host, rc->port, ac->errstr);
    rc->ac = NULL;
    rc->retry_at = tn_time_ms(rc->loop) + 1000;
}
static void rc__on_connect(const redisAsyncContext *ac, int status) {
    if (status != REDIS_OK) rc__lost((redis_cache *)ac->data, ac); /* hiredis frees ac */
}
static void rc__on_disconnect(const redisAsyncContext *ac, int status) {
    (void)status;
    rc__lost((redis_cache *)ac->data, ac);
}

/* The connection, opened if need be: 0, TN_ECLOSED or TN_ENOMEM. */
static int rc__connection(redis_cache *rc) {
    redisAsyncContext *ac;
    if (rc->ac) return 0;
    if (tn_time_ms(rc->loop) < rc->retry_at) return TN_ECLOSED;
    if (!(ac = redisAsyncConnect(rc->host, rc->port))) return TN_ENOMEM;
    if (ac->err || redisTornadoAttach(ac, rc->loop) != REDIS_OK) {
        fprintf(stderr, "redis %s:%d: %s\n", rc->host, rc->port, ac->err ? ac->errstr : "cannot watch the socket");
        redisAsyncFree(ac);
        rc->retry_at = tn_time_ms(rc->loop) + 1000;
        return TN_ECLOSED;
    }
    ac->data = rc;
    redisAsyncSetConnectCallback(ac, rc__on_connect);
    redisAsyncSetDisconnectCallback(ac, rc__on_disconnect);
    rc->ac = ac;
    return 0;
}

/* The future each command answers, settled from its reply. */
static tn_future *rc__failed(tn_loop *loop, int err) {
    tn_future *f = tn_future_new(loop);
    if (f) tn_future_fail(f, err);
    return f;
}
static int rc__reply_error(const redisReply *r) {
    if (!r) return TN_ECLOSED; /* the connection went: every pending command gets NULL */
    return r->type == REDIS_REPLY_ERROR ? TN_EINVAL : 0;
}

static void rc__got(redisAsyncContext *ac, void *reply, void *priv) {
    redisReply *r = (redisReply *)reply;
    tn_future *f = (tn_future *)priv;
    tn_bytes *b;
    int err = rc__reply_error(r);
    (void)ac;
    if (err) tn_future_fail(f, err);
    else if (r->type != REDIS_REPLY_STRING) tn_future_resolve(f, NULL); /* nil: a miss */
    else if (!(b = tn_bytes_new(r->str, r->len))) tn_future_fail(f, TN_ENOMEM);
    else tn_future_resolve_owned(f, b, tn_bytes_free);
}
static void rc__done(redisAsyncContext *ac, void *reply, void *priv) {
    int err = rc__reply_error((redisReply *)reply);
    (void)ac;
    if (err) tn_future_fail((tn_future *)priv, err);
    else tn_future_resolve((tn_future *)priv, NULL);
}

/* Sends a command whose reply settles a new future through cb. The
 * future is the command's until its reply comes (even if the cache
 * cancels it meanwhile: settling a cancelled future just frees it). */
static tn_future *rc__command(redis_cache *rc, redisCallbackFn *cb, const char *fmt, ...) {
    tn_future *f;
    va_list ap;
    int err = rc__connection(rc), ok;
    if (err) return rc__failed(rc->loop, err);
    if (!(f = tn_future_new(rc->loop))) return NULL;
    va_start(ap, fmt);
    ok = redisvAsyncCommand(rc->ac, cb, f, fmt, ap) == REDIS_OK;
    va_end(ap);
    if (!ok) tn_future_fail(f, TN_ECLOSED);
    return f;
}

static tn_future *rc__get(void *impl, const char *key) {
    redis_cache *rc = (redis_cache *)impl;
    return rc__command(rc, rc__got, "GET %b%s", rc->ns, rc->ns_len, key);
}
static tn_future *rc__set(void *impl, const char *key, const void *data, size_t len, uint64_t ttl_ms) {
    redis_cache *rc = (redis_cache *)impl;
    if (!ttl_ms) return rc__command(rc, rc__done, "SET %b%s %b", rc->ns, rc->ns_len, key, data, len);
    return rc__command(rc, rc__done, "SET %b%s %b PX %llu", rc->ns, rc->ns_len, key, data, len,
                       (unsigned long long)ttl_ms);
}
static tn_future *rc__del(void *impl, const char *key) {
    redis_cache *rc = (redis_cache *)impl;
    return rc__command(rc, rc__done, "DEL %b%s", rc->ns, rc->ns_len, key);
}

/* Prefix deletion: SCAN cursor MATCH pattern, a DEL of each batch found,
 * until the cursor is 0 again. Replies come in order, so the future
 * settles when the last command sent has answered. */
typedef struct rc__sweep {
    redis_cache *rc;
    tn_future *f;
    int pending, scanned, err;
    char pattern[1];
} rc__sweep;

static void rc__sweep_reply(redisAsyncContext *ac, void *reply, void *priv);

static void rc__sweep_send(rc__sweep *s, int argc, const char **argv, const size_t *lens) {
    if (!s->err && redisAsyncCommandArgv(s->rc->ac, rc__sweep_reply, s, argc, argv, lens) == REDIS_OK) s->pending++;
    else if (!s->err) s->err = TN_ECLOSED;
}
static void rc__sweep_scan(rc__sweep *s, const char *cursor, size_t cursor_len) {
    const char *argv[6] = {"SCAN", cursor, "MATCH", s->pattern, "COUNT", "1000"};
    size_t lens[6] = {4, cursor_len, 5, strlen(s->pattern), 5, 4};
    rc__sweep_send(s, 6, argv, lens);
}
static void rc__sweep_del(rc__sweep *s, const redisReply *keys) {
    const char **argv = (const char **)malloc((keys->elements + 1) * sizeof *argv);
    size_t *lens = (size_t *)malloc((keys->elements + 1) * sizeof *lens), i;
    if (argv && lens) {
        argv[0] = "DEL";
        lens[0] = 3;
        for (i = 0; i < keys->elements; i++) {
            argv[i + 1] = keys->element[i]->str;
            lens[i + 1] = keys->element[i]->len;
        }
        rc__sweep_send(s, (int)keys->elements + 1, argv, lens);
    } else if (!s->err) {
        s->err = TN_ENOMEM;
    }
    free(argv);
    free(lens);
}
static void rc__sweep_reply(redisAsyncContext *ac, void *reply, void *priv) {
    rc__sweep *s = (rc__sweep *)priv;
    redisReply *r = (redisReply *)reply;
    int err = rc__reply_error(r);
    (void)ac;
    s->pending--;
    if (err && !s->err) s->err = err;
    if (!err && r->type == REDIS_REPLY_ARRAY && r->elements == 2) { /* a SCAN's [cursor, keys] */
        const redisReply *cursor = r->element[0], *keys = r->element[1];
        if (keys->elements) rc__sweep_del(s, keys);
        if (cursor->len == 1 && cursor->str[0] == '0') s->scanned = 1;
        else rc__sweep_scan(s, cursor->str, cursor->len);
    }
    if (s->pending) return;
    if (s->err) tn_future_fail(s->f, s->err);
    else tn_future_resolve(s->f, NULL);
    free(s);
}

/* Escapes glob characters, so a prefix matches only itself, and adds *. */
static void rc__glob(char *out, const char *ns, const char *prefix) {
    const char *parts[2];
    int i;
    parts[0] = ns;
    parts[1] = prefix;
    for (i = 0; i < 2; i++)
        for (const char *p = parts[i]; *p; p++) {
            if (strchr("*?[]\\", *p)) *out++ = '\\';
            *out++ = *p;
        }
    *out++ = '*';
    *out = 0;
}

static tn_future *rc__del_prefix(void *impl, const char *prefix) {
    redis_cache *rc = (redis_cache *)impl;
    rc__sweep *s;
    int err;
    if (!rc->ns_len && !*prefix) return rc__command(rc, rc__done, "FLUSHDB");
    if ((err = rc__connection(rc)) != 0) return rc__failed(rc->loop, err);
    if (!(s = (rc__sweep *)calloc(1, sizeof *s + 2 * (rc->ns_len + strlen(prefix)) + 1))) return NULL;
    if (!(s->f = tn_future_new(rc->loop))) {
        free(s);
        return NULL;
    }
    s->rc = rc;
    rc__glob(s->pattern, rc->ns, prefix);
    rc__sweep_scan(s, "0", 1);
    if (!s->pending) { /* not even the first SCAN went */
        tn_future *f = s->f;
        tn_future_fail(f, s->err);
        free(s);
        return f;
    }
    return s->f;
}

/* The connection closes; pending commands' futures fail (TN_ECLOSED). */
static void rc__free(void *impl) {
    redis_cache *rc = (redis_cache *)impl;
    if (rc->ac) redisAsyncFree(rc->ac); /* runs the callbacks; on_disconnect clears rc->ac */
    free(rc->host);
    free(rc->ns);
    free(rc);
}

static const tn_cache_backend redis_cache_backend = {rc__get, rc__set, rc__del, rc__del_prefix, rc__free};

/* Starts connecting to Redis at host:port (an address: see above) and
 * fills opts->backend and opts->backend_impl for tn_cache_new, which owns
 * the connection from then on (without it: opts->backend->free(impl)).
 * Keys are stored as ns + key (ns copied; "" or NULL: none). 0 or
 * TN_ENOMEM: a Redis that cannot be reached is not an error here (the
 * reason goes to stderr), it is a cache that misses until it can. */
RC__FN int redis_cache_connect(tn_loop *loop, const char *host, int port, const char *ns, tn_cache_opts *opts) {
    redis_cache *rc = (redis_cache *)calloc(1, sizeof *rc);
    size_t hl = strlen(host) + 1;
    if (!ns) ns = "";
    if (!rc || !(rc->host = (char *)malloc(hl)) || !(rc->ns = (char *)malloc(strlen(ns) + 1))) {
        if (rc) free(rc->host);
        free(rc);
        return TN_ENOMEM;
    }
    memcpy(rc->host, host, hl);
    strcpy(rc->ns, ns);
    rc->ns_len = strlen(ns);
    rc->port = port;
    rc->loop = loop;
    if (rc__connection(rc) == TN_ENOMEM) {
        rc__free(rc);
        return TN_ENOMEM;
    }
    opts->backend = &redis_cache_backend;
    opts->backend_impl = rc;
    return 0;
}

#endif
