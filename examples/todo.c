/* todo: a JSON REST API over a database, with a cache in front of its reads.
 *
 *   todo [--port P] [--db FILE | --pg CONNINFO] [--pool N] [--db-timeout MS]
 *        [--cache-ttl S] [--redis HOST:PORT] [--debug]
 *
 *   POST   /todos       {"title": "...", "done": false} -> 201, Location: /todos/{id}, the todo
 *   GET    /todos       every todo, by id
 *   GET    /todos/{id}  one todo
 *   PUT    /todos/{id}  {"title": "..."} and/or {"done": true} -> the todo
 *   DELETE /todos/{id}  204
 *   GET    /stats       {"db_queries": N, "cache_hits": N, "cache_misses": N}
 *   GET    /debug/sleep/{ms}  (--debug, PostgreSQL) a statement that sleeps:
 *                       for trying cancellation and --db-timeout
 * Errors are JSON too ({"error": "..."}): 400 for a body that is not a JSON
 * object or a field missing or of the wrong type, 404 for an unknown id,
 * 503 when the database is away, 504 when it is too slow (--db-timeout).
 *
 * The database: SQLite in FILE (todo.db in the current directory unless
 * --db; created on first run), its statements on the executor
 * (examples/sqlite.h); or PostgreSQL with --pg (examples/pg.h: a pool of
 * --pool connections on the loop; a request whose client goes away has its
 * statement cancelled on the server). The same parameterised SQL runs on
 * both; nothing a client sends is ever spliced into SQL.
 * The cache: with --cache-ttl S (or --redis), GET /todos and GET /todos/{id}
 * go through tn_cache_fetch: 100 concurrent reads of a missing entry cost
 * one query (single-flight), and every write invalidates what it changed.
 * In memory by default; with --redis the entries live in Redis
 * (examples/redis_cache.h), shared by every todo process using it, so a
 * write through one invalidates the others' reads.
 *
 * Build (make examples does it when the libraries are there):
 *   cc -O2 -DTODO_SQLITE todo.c -o todo -pthread -lsqlite3 -lcjson
 *      [-DTODO_PG -I/usr/include/postgresql -lpq] [-DTODO_REDIS -lhiredis]
 * SIGINT or SIGTERM shuts it down gracefully. */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* TODO_SQLITE says SQLite and cJSON are there to link (make examples
 * checks). make check-cross builds every example bare, for machines that
 * have neither: then this is a program that says what it needs. */
#ifndef TODO_SQLITE
int main(void) {
    fprintf(stderr, "todo: built without -DTODO_SQLITE (SQLite and cJSON: libsqlite3-dev, libcjson-dev)\n");
    return 1;
}
#else

#include <cjson/cJSON.h>
#include "sqlite.h"
#ifdef TODO_PG
#include "pg.h"
#endif
#ifdef TODO_REDIS
#include "redis_cache.h"
#endif

#define LIST_KEY "list"

struct app {
    tn_loop *loop;
    sq_db *sq;
#ifdef TODO_PG
    pg_pool *pg; /* set: PostgreSQL, else SQLite */
#endif
    tn_cache *cache; /* NULL: no cache */
    uint64_t ttl_ms;
    unsigned long long db_queries, cached_reads, fills;
};

/* The statements, in the dialect SQLite and PostgreSQL share ($N
 * parameters, RETURNING). done is "1" or "0" going in; out it is SQLite's
 * 1/0 or PostgreSQL's t/f. */
static const char SQL_LIST[] = "SELECT id, title, done FROM todos ORDER BY id";
static const char SQL_GET[] = "SELECT id, title, done FROM todos WHERE id = $1";
static const char SQL_CREATE[] = "INSERT INTO todos (title, done) VALUES ($1, $2) RETURNING id, title, done";
static const char SQL_UPDATE[] = "UPDATE todos SET title = COALESCE($2, title), done = COALESCE($3, done) "
                                 "WHERE id = $1 RETURNING id, title, done";
static const char SQL_DELETE[] = "DELETE FROM todos WHERE id = $1 RETURNING id";
static const char SCHEMA_SQLITE[] = "CREATE TABLE IF NOT EXISTS todos (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                                    "title TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0)";
#ifdef TODO_PG
static const char SCHEMA_PG[] = "CREATE TABLE IF NOT EXISTS todos (id BIGSERIAL PRIMARY KEY, "
                                "title TEXT NOT NULL, done BOOLEAN NOT NULL DEFAULT false)";
#endif

/* ------------------------------------------------------------------
 * One interface over both databases: a statement's future, and its
 * result's rows. (The future's value is a PGresult* or an sq_result*.)
 * ---------------------------------------------------------------- */
static tn_future *db_query(struct app *a, const char *sql, int n, const char *const *params) {
    a->db_queries++;
#ifdef TODO_PG
    if (a->pg) return pg_query(a->pg, sql, n, params, 0);
#endif
    return sq_exec(a->sq, sql, n, params);
}

/* Whether the database answered with success (else the reason goes to stderr). */
static int result_ok(const struct app *a, const void *r) {
    const char *why;
#ifdef TODO_PG
    if (a->pg) {
        if (pg_ok((const PGresult *)r)) return 1;
        why = PQresultErrorMessage((const PGresult *)r);
    } else
#endif
    {
        (void)a;
        if (((const sq_result *)r)->rc == SQLITE_OK) return 1;
        why = ((const sq_result *)r)->errmsg;
    }
    fprintf(stderr, "todo: database: %s\n", why ? why : "?");
    return 0;
}
static size_t result_rows(const struct app *a, const void *r) {
#ifdef TODO_PG
    if (a->pg) return (size_t)PQntuples((const PGresult *)r);
#endif
    (void)a;
    return ((const sq_result *)r)->nrows;
}
static const char *result_cell(const struct app *a, const void *r, size_t row, int col) {
#ifdef TODO_PG
    if (a->pg) return PQgetisnull((const PGresult *)r, (int)row, col) ? NULL : PQgetvalue((const PGresult *)r, (int)row, col);
#endif
    (void)a;
    return sq_cell((const sq_result *)r, row, col);
}
static void result_free(const struct app *a, void *r) {
#ifdef TODO_PG
    if (a->pg) {
        PQclear((PGresult *)r);
        return;
    }
#endif
    (void)a;
    sq_result_free(r);
}

/* The answer to a statement that got no answer from the database. */
static int db_error_status(int err) { return err == TN_ETIMEOUT ? 504 : 503; }
static const char *db_error_message(int err) {
    return err == TN_ETIMEOUT ? "database timeout" : err == TN_ENOMEM ? "out of memory" : "database unavailable";
}

/* ------------------------------------------------------------------
 * JSON out: built in a growing tn_bytes, so it can be cached and sent
 * by reference as it is.
 * ---------------------------------------------------------------- */
struct jbuf {
    tn_bytes *b; /* NULL once out of memory */
    size_t cap;
};
static int jb_room(struct jbuf *j, size_t n) {
    tn_bytes *nb;
    size_t cap;
    if (!j->b) return 0;
    if (j->b->len + n + 1 <= j->cap) return 1;
    for (cap = j->cap ? j->cap : 256; cap < j->b->len + n + 1; cap *= 2) {}
    if (!(nb = (tn_bytes *)TN_REALLOC(j->b, sizeof *nb + cap))) {
        TN_FREE(j->b);
        j->b = NULL;
        return 0;
    }
    j->b = nb;
    j->cap = cap;
    return 1;
}
static int jb_init(struct jbuf *j) {
    j->cap = 0;
    if (!(j->b = (tn_bytes *)TN_MALLOC(sizeof *j->b))) return 0;
    j->b->len = 0;
    j->b->data[0] = 0;
    return jb_room(j, 256);
}
static void jb_put(struct jbuf *j, const char *s) {
    size_t n = strlen(s);
    if (!jb_room(j, n)) return;
    memcpy(j->b->data + j->b->len, s, n + 1);
    j->b->len += n;
}
static void jb_str(struct jbuf *j, const char *s) { /* a JSON string literal */
    size_t n = strlen(s), need = tn_json_escape(NULL, 0, s, n);
    if (!jb_room(j, need)) return;
    tn_json_escape(j->b->data + j->b->len, need + 1, s, n);
    j->b->len += need;
}
/* One todo from a row (id, title, done). */
static void jb_todo(struct jbuf *j, const struct app *a, const void *r, size_t row) {
    const char *done = result_cell(a, r, row, 2);
    jb_put(j, "{\"id\":");
    jb_put(j, result_cell(a, r, row, 0));
    jb_put(j, ",\"title\":");
    jb_str(j, result_cell(a, r, row, 1));
    jb_put(j, done && (done[0] == '1' || done[0] == 't') ? ",\"done\":true}" : ",\"done\":false}");
}
/* The rows as a JSON array, or the first row as an object. */
static tn_bytes *render(const struct app *a, const void *r, int as_list) {
    struct jbuf j;
    size_t i, n = result_rows(a, r);
    if (!jb_init(&j)) return NULL;
    if (!as_list) {
        jb_todo(&j, a, r, 0);
        return j.b;
    }
    jb_put(&j, "[");
    for (i = 0; i < n; i++) {
        if (i) jb_put(&j, ",");
        jb_todo(&j, a, r, i);
    }
    jb_put(&j, "]");
    return j.b;
}

static void respond_json(tn_http_request *req, int status, tn_bytes *body) {
    if (!body) {
        tn_http_respond(req, 503, "application/json", "{\"error\":\"out of memory\"}", 25);
        return;
    }
    tn_http_respond_ref(req, status, "application/json", body->data, body->len, tn_bytes_free, body);
}
static void respond_error(tn_http_request *req, int status, const char *message) {
    char body[256];
    size_t n = tn_json_escape(body + 9, sizeof body - 11, message, strlen(message));
    if (n > sizeof body - 12) { /* not with our messages */
        memcpy(body + 9, "\"?\"", 3);
        n = 3;
    }
    memcpy(body, "{\"error\":", 9);
    memcpy(body + 9 + n, "}", 2);
    tn_http_respond(req, status, "application/json", body, 9 + n + 1);
}
/* Every error answer the server makes itself (404, 405, 413...) is JSON. */
static void on_error(tn_http_request *req, int status, void *arg) {
    (void)arg;
    respond_error(req, status, tn_http_reason(status));
}

/* The id of /todos/{id} as a canonical decimal (so "007" and "7" are one
 * cache key), or 0 when it is no id at all (a 404, as any unknown id). */
static int parse_id(tn_http_request *req, char out[24]) {
    const char *s = tn_http_param(req, "id"), *p;
    long long v = 0;
    if (!s || !*s || strlen(s) > 18) return 0;
    for (p = s; *p; p++) {
        if (*p < '0' || *p > '9') return 0;
        v = v * 10 + (*p - '0');
    }
    if (v <= 0) return 0;
    snprintf(out, 24, "%lld", v);
    return 1;
}

/* ------------------------------------------------------------------
 * Reads: a coroutine loads the rows and renders them; through the cache
 * it is the fill, run once per key however many requests wait for it.
 * ---------------------------------------------------------------- */
struct load_frame {
    tn_co co;
    struct app *a;
    char id[24]; /* "" for the list */
};

static int load(tn_co *co) {
    struct load_frame *l = (struct load_frame *)co;
    const char *params[1];
    void *r;
    tn_bytes *body;
    TN_BEGIN(co);
    params[0] = l->id;
    TN_AWAIT(co, l->id[0] ? db_query(l->a, SQL_GET, 1, params) : db_query(l->a, SQL_LIST, 0, NULL));
    if (co->err) TN_FAIL(co, co->err);
    r = co->value;
    if (!result_ok(l->a, r) || (l->id[0] && result_rows(l->a, r) == 0)) {
        int err = result_ok(l->a, r) ? TN_ENOENT : TN_EINVAL; /* not found: not cached either */
        result_free(l->a, r);
        TN_FAIL(co, err);
    }
    body = render(l->a, r, !l->id[0]);
    result_free(l->a, r);
    if (!body) TN_FAIL(co, TN_ENOMEM);
    TN_RETURN_OWNED(co, body, tn_bytes_free);
    TN_END(co);
}

/* key is LIST_KEY or "id:{id}". */
static tn_future *load_key(struct app *a, const char *key) {
    struct load_frame *l = TN_CO_NEW(a->loop, struct load_frame);
    if (!l) return NULL;
    l->a = a;
    if (strncmp(key, "id:", 3) == 0) snprintf(l->id, sizeof l->id, "%s", key + 3);
    return tn_spawn(a->loop, &l->co, load);
}

static tn_future *fill(const char *key, void *arg) {
    struct app *a = (struct app *)arg;
    a->fills++;
    return load_key(a, key);
}

/* Through the cache, else straight from the database. A write's
 * invalidation while a fill runs keeps that fill's rows (maybe from
 * before the write) out of the cache: tn_cache sees to it. */
static tn_future *read_through(struct app *a, const char *key) {
    if (a->cache) return tn_cache_fetch(a->cache, key, a->ttl_ms, fill, a);
    return load_key(a, key);
}

struct read_frame {
    tn_http_co h;
    char key[32];
};

/* GET /todos and GET /todos/{id} */
static int read_todos(tn_co *co) {
    struct read_frame *f = (struct read_frame *)co;
    struct app *a = (struct app *)f->h.arg;
    char id[24];
    TN_BEGIN(co);
    if (!tn_http_param(f->h.req, "id")) snprintf(f->key, sizeof f->key, "%s", LIST_KEY);
    else if (parse_id(f->h.req, id)) snprintf(f->key, sizeof f->key, "id:%s", id);
    else {
        respond_error(f->h.req, 404, "no such todo");
        TN_RETURN(co, NULL);
    }
    TN_AWAIT(co, read_through(a, f->key));
    if (a->cache) a->cached_reads++;
    if (co->err == TN_ENOENT) respond_error(f->h.req, 404, "no such todo");
    else if (co->err == TN_EINVAL) respond_error(f->h.req, 500, "database error");
    else if (co->err) respond_error(f->h.req, db_error_status(co->err), db_error_message(co->err));
    else respond_json(f->h.req, 200, (tn_bytes *)co->value);
    TN_END(co);
}

/* ------------------------------------------------------------------
 * Writes
 * ---------------------------------------------------------------- */
struct todo_in {
    const char *title; /* NULL: not given */
    int has_done, done;
};

/* Reads {"title": string, "done": bool} from the body into in (title
 * points into *json, yours to cJSON_Delete). NULL, or why it is a 400. */
static const char *parse_todo(tn_http_request *req, cJSON **json, struct todo_in *in) {
    size_t len;
    const char *body = tn_http_body(req, &len);
    const cJSON *title, *done;
    const char *end = NULL;
    memset(in, 0, sizeof *in);
    *json = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    while (*json && end < body + len && *end && strchr(" \t\r\n", *end)) end++;
    if (!*json || end != body + len) return "the body is not JSON"; /* nothing may follow the value */
    if (!cJSON_IsObject(*json)) return "the body must be a JSON object";
    title = cJSON_GetObjectItemCaseSensitive(*json, "title");
    done = cJSON_GetObjectItemCaseSensitive(*json, "done");
    if (title && (!cJSON_IsString(title) || !title->valuestring[0])) return "title must be a non-empty string";
    if (title && strlen(title->valuestring) > 1000) return "title must be at most 1000 bytes";
    if (done && !cJSON_IsBool(done)) return "done must be true or false";
    in->title = title ? title->valuestring : NULL;
    in->has_done = done != NULL;
    in->done = done && cJSON_IsTrue(done);
    return NULL;
}

struct write_frame {
    tn_http_co h;
    char id[24];
    char key[32];       /* the item's cache key ("" for a create) */
    tn_future *pending; /* the statement, started before its await */
    void *result;       /* its result, answered once the cache has forgotten */
    int op, err;
};
enum { OP_CREATE, OP_UPDATE, OP_DELETE };

/* Validates the request and starts its statement: 0, or the status of
 * the answer already given. */
static int start_write(struct write_frame *f, struct app *a) {
    tn_http_request *req = f->h.req;
    const char *method = tn_http_method(req), *why = NULL, *params[3];
    cJSON *json = NULL;
    struct todo_in in;
    memset(&in, 0, sizeof in);
    f->op = strcmp(method, "POST") == 0 ? OP_CREATE : strcmp(method, "PUT") == 0 ? OP_UPDATE : OP_DELETE;
    if (f->op != OP_CREATE) {
        if (!parse_id(req, f->id)) {
            respond_error(req, 404, "no such todo");
            return 404;
        }
        snprintf(f->key, sizeof f->key, "id:%s", f->id);
    }
    if (f->op != OP_DELETE && (why = parse_todo(req, &json, &in)) == NULL) {
        if (f->op == OP_CREATE && !in.title) why = "title is required";
        if (f->op == OP_UPDATE && !in.title && !in.has_done) why = "give title or done";
    }
    if (why) {
        cJSON_Delete(json);
        respond_error(req, 400, why);
        return 400;
    }
    params[0] = f->op == OP_CREATE ? in.title : f->id;
    if (f->op == OP_CREATE) {
        params[1] = in.done ? "1" : "0";
    } else {
        params[1] = in.title;
        params[2] = in.has_done ? (in.done ? "1" : "0") : NULL;
    }
    /* the statement copies its parameters: the JSON can go now */
    f->pending = f->op == OP_CREATE   ? db_query(a, SQL_CREATE, 2, params)
                 : f->op == OP_UPDATE ? db_query(a, SQL_UPDATE, 3, params)
                                      : db_query(a, SQL_DELETE, 1, params);
    cJSON_Delete(json);
    return 0;
}

/* Answers the statement's outcome (err, result r: taken). */
static void answer_write(struct write_frame *f, struct app *a, int err, void *r) {
    tn_http_request *req = f->h.req;
    char location[64];
    if (err) {
        respond_error(req, db_error_status(err), db_error_message(err));
        return;
    }
    if (!result_ok(a, r)) respond_error(req, 500, "database error");
    else if (!result_rows(a, r)) respond_error(req, 404, "no such todo");
    else if (f->op == OP_DELETE) tn_http_respond(req, 204, NULL, "", 0);
    else {
        if (f->op == OP_CREATE) {
            snprintf(location, sizeof location, "/todos/%s", result_cell(a, r, 0, 0));
            tn_http_set_header(req, "Location", location);
        }
        respond_json(req, f->op == OP_CREATE ? 201 : 200, render(a, r, 0));
    }
    result_free(a, r);
}

/* What a write changed, out of the cache: the list, and its item. */
static tn_future *invalidate(struct app *a, const char *item_key) {
    tn_future *fs[2];
    fs[0] = tn_cache_delete(a->cache, LIST_KEY);
    if (!*item_key) return fs[0];
    fs[1] = tn_cache_delete(a->cache, item_key);
    if (!fs[0] || !fs[1]) {
        tn_future_release(fs[0]);
        tn_future_release(fs[1]);
        return NULL;
    }
    return tn_all(a->loop, fs, 2, NULL);
}

/* POST /todos, PUT /todos/{id}, DELETE /todos/{id} */
static int write_todo(tn_co *co) {
    struct write_frame *f = (struct write_frame *)co;
    struct app *a = (struct app *)f->h.arg;
    TN_BEGIN(co);
    if (start_write(f, a)) TN_RETURN(co, NULL);
    /* Awaited even if our client leaves: the statement ends (PostgreSQL
     * cancels it) before this resumes, so the write count stays right. */
    TN_AWAIT(co, f->pending);
    f->err = co->err;
    f->result = co->value;
    if (a->cache) {
        /* Invalidate before answering: the client's next read, in this
         * process or another sharing the cache, must see the write. */
        TN_AWAIT(co, invalidate(a, f->key));
        if (co->err) fprintf(stderr, "todo: invalidate: %s\n", tn_strerror(co->err));
    }
    answer_write(f, a, f->err, f->result);
    TN_END(co);
}

/* GET /stats. A read through the cache that cost no query of its own is a
 * hit: 100 concurrent reads of one missing entry are 1 miss and 99 hits. */
static void stats(tn_http_request *req, void *arg) {
    struct app *a = (struct app *)arg;
    char body[160];
    unsigned long long hits = a->cached_reads > a->fills ? a->cached_reads - a->fills : 0;
    int n = snprintf(body, sizeof body, "{\"db_queries\":%llu,\"cache_hits\":%llu,\"cache_misses\":%llu}",
                     a->db_queries, hits, a->fills);
    tn_http_set_header(req, "Cache-Control", "no-store");
    tn_http_respond(req, 200, "application/json", body, (size_t)n);
}

#ifdef TODO_PG
/* GET /debug/sleep/{ms} (--debug): SELECT pg_sleep, under the pool's
 * timeout, cancelled on the server if the client leaves first. */
struct sleep_frame {
    tn_http_co h;
};
static int debug_sleep(tn_co *co) {
    struct sleep_frame *f = (struct sleep_frame *)co;
    struct app *a = (struct app *)f->h.arg;
    const char *params[1];
    TN_BEGIN(co);
    params[0] = tn_http_param(f->h.req, "ms");
    TN_AWAIT(co, db_query(a, "SELECT pg_sleep($1::float8 / 1000)", 1, params));
    if (co->err) {
        respond_error(f->h.req, db_error_status(co->err), db_error_message(co->err));
        TN_FAIL(co, co->err);
    }
    if (result_ok(a, co->value)) tn_http_respond(f->h.req, 200, "application/json", "{\"slept\":true}", 14);
    else respond_error(f->h.req, 400, "bad sleep");
    result_free(a, co->value);
    TN_END(co);
}
#endif

/* ------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------- */
static tn_http_server *server;
static void on_signal(tn_loop *loop, int signo, void *arg) {
    (void)signo;
    (void)arg;
    tn_future_release(tn_http_server_shutdown(server, 5000));
    tn_loop_stop(loop);
}

/* Runs a statement at start-up: 0 if it succeeded. */
static int setup_query(struct app *a, const char *sql) {
    void *r = NULL;
    int err = tn_run_sync(a->loop, db_query(a, sql, 0, NULL), 15000, &r), ok;
    if (err) {
        fprintf(stderr, "todo: database: %s\n", tn_strerror(err));
        return -1;
    }
    ok = result_ok(a, r);
    result_free(a, r);
    a->db_queries = 0; /* /stats counts the requests' queries */
    return ok ? 0 : -1;
}

static int open_db(struct app *a, const char *file, const char *pg, int pool, unsigned timeout_ms) {
    void *db = NULL;
    int err;
    if (pg) {
#ifdef TODO_PG
        pg_pool_opts o = {0};
        o.size = pool;
        o.query_timeout_ms = timeout_ms;
        o.app_name = "todo";
        if (pg_pool_new(a->loop, pg, &o, &a->pg)) return -1;
        return setup_query(a, SCHEMA_PG);
#else
        (void)pool;
        fprintf(stderr, "todo: built without PostgreSQL (libpq-dev)\n");
        return -1;
#endif
    }
    (void)pool;
    (void)timeout_ms;
    if ((err = tn_run_sync(a->loop, sq_open(a->loop, file), 15000, &db)) != 0) {
        fprintf(stderr, "todo: %s: %s\n", file, tn_strerror(err));
        return -1;
    }
    a->sq = (sq_db *)db;
    /* WAL: readers do not wait for a writer (another todo process, say) */
    return setup_query(a, "PRAGMA journal_mode=WAL") || setup_query(a, SCHEMA_SQLITE) ? -1 : 0;
}

static int open_cache(struct app *a, long ttl_s, const char *redis) {
    tn_cache_opts o = {0};
    if (ttl_s <= 0 && !redis) return 0;
    a->ttl_ms = (uint64_t)(ttl_s > 0 ? ttl_s : 60) * 1000;
    o.ttl_ms = a->ttl_ms;
    if (redis) {
#ifdef TODO_REDIS
        const char *colon = strrchr(redis, ':');
        char host[256];
        if (!colon || (size_t)(colon - redis) >= sizeof host || atoi(colon + 1) <= 0) {
            fprintf(stderr, "todo: --redis HOST:PORT\n");
            return -1;
        }
        memcpy(host, redis, (size_t)(colon - redis));
        host[colon - redis] = 0;
        if (redis_cache_connect(a->loop, host, atoi(colon + 1), "todo:", &o)) return -1;
#else
        fprintf(stderr, "todo: built without Redis (libhiredis-dev)\n");
        return -1;
#endif
    }
    return tn_cache_new(a->loop, &o, &a->cache) ? -1 : 0;
}

static void routes(tn_http_server *srv, struct app *a, int debug) {
    tn_http_route_opts rd = {0}, wr = {0};
    rd.frame_size = sizeof(struct read_frame);
    wr.frame_size = sizeof(struct write_frame);
    wr.max_body_bytes = 64 * 1024;
    tn_http_route_co(srv, "GET", "/todos", read_todos, a, &rd);
    tn_http_route_co(srv, "POST", "/todos", write_todo, a, &wr);
    tn_http_route_co(srv, "GET", "/todos/{id}", read_todos, a, &rd);
    tn_http_route_co(srv, "PUT", "/todos/{id}", write_todo, a, &wr);
    tn_http_route_co(srv, "DELETE", "/todos/{id}", write_todo, a, &wr);
    tn_http_route(srv, "GET", "/stats", stats, a, NULL);
#ifdef TODO_PG
    if (debug && a->pg) {
        tn_http_route_opts sl = {0};
        sl.frame_size = sizeof(struct sleep_frame);
        tn_http_route_co(srv, "GET", "/debug/sleep/{ms}", debug_sleep, a, &sl);
    }
#endif
    (void)debug;
}

static int usage(void) {
    fprintf(stderr, "usage: todo [--port P] [--db FILE | --pg CONNINFO] [--pool N] [--db-timeout MS]\n"
                    "            [--cache-ttl S] [--redis HOST:PORT] [--debug]\n"
                    "built with: sqlite"
#ifdef TODO_PG
                    " pg"
#endif
#ifdef TODO_REDIS
                    " redis"
#endif
                    "\n");
    return 2;
}

int main(int argc, char **argv) {
    struct app a;
    tn_http_server_opts so = {0};
    const char *file = "todo.db", *pg = NULL, *redis = NULL;
    int port = 8888, pool = 4, debug = 0, i, rc;
    long ttl = 0;
    unsigned timeout_ms = 0;
    memset(&a, 0, sizeof a);
    for (i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(o, "--debug") == 0) {
            debug = 1;
            continue;
        }
        if (!v) return usage();
        if (strcmp(o, "--port") == 0) port = atoi(v);
        else if (strcmp(o, "--db") == 0) file = v;
        else if (strcmp(o, "--pg") == 0) pg = v;
        else if (strcmp(o, "--pool") == 0) pool = atoi(v);
        else if (strcmp(o, "--db-timeout") == 0) timeout_ms = (unsigned)atoi(v);
        else if (strcmp(o, "--cache-ttl") == 0) ttl = atol(v);
        else if (strcmp(o, "--redis") == 0) redis = v;
        else return usage();
        i++;
    }
    signal(SIGPIPE, SIG_IGN);
    so.on_error = on_error;
    if (tn_loop_new(&a.loop, NULL) || open_db(&a, file, pg, pool, timeout_ms) || open_cache(&a, ttl, redis) ||
        tn_http_server_new(a.loop, &so, &server))
        return 1;
    routes(server, &a, debug);
    if ((rc = tn_http_listen(server, "127.0.0.1", port)) != 0) {
        fprintf(stderr, "todo: listen on port %d: %s\n", port, tn_strerror(rc));
        return 1;
    }
    tn_signal_add(a.loop, SIGINT, on_signal, NULL);
    tn_signal_add(a.loop, SIGTERM, on_signal, NULL);
    printf("listening on http://127.0.0.1:%d\n", tn_http_server_port(server));
    fflush(stdout);
    tn_loop_run(a.loop);
    while (tn_http_server_connections(server)) tn_loop_step(a.loop, 100);
    tn_http_server_free(server);
    tn_cache_free(a.cache);
#ifdef TODO_PG
    if (a.pg) {
        for (i = 0; i < 50 && pg_pool_queries(a.pg); i++) tn_loop_step(a.loop, 100); /* cancels still draining */
        pg_pool_free(a.pg);
    }
#endif
    sq_close(a.sq);
    tn_loop_free(a.loop);
    return 0;
}
#endif
