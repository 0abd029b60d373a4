/* sqlite.h - SQLite on tornado.h's executor: open a file, run parameterised
 * statements off the loop, get each answer as an owned value. Header-only:
 * copy it next to tornado.h, include it after tornado.h, link -lsqlite3.
 *
 *     TN_AWAIT(co, sq_exec(db, "SELECT title FROM todos WHERE id = $1", 1, params));
 *     if (co->err) ...                          // no answer: TN_ENOMEM, TN_ECANCELLED
 *     r = co->value;                            // yours: sq_result_free(r)
 *     if (r->rc != SQLITE_OK) ... r->errmsg ... // the database said no
 *     sq_cell(r, 0, 0)                          // row 0, column 0, as text (NULL: SQL NULL)
 *
 * Why the executor: SQLite is a library, not a server, so a statement runs
 * on the calling thread and blocks it (disk I/O, a lock held by another
 * process). sq_exec runs it on a pool thread (tn_run_in_executor_owned),
 * and the loop serves others meanwhile.
 * Parameters are text, bound to $1..$n (or ?1..?n, or plain ? in order),
 * so the same SQL runs on PostgreSQL (examples/pg.h); a NULL parameter is
 * SQL NULL. SQL is never built from strings here: what a client sends
 * goes in as a parameter. Column affinity converts "12" to 12 where a
 * column is an INTEGER.
 * One connection, one statement at a time: each job holds the
 * connection's mutex from prepare to finalize, so changes and last_id are
 * its own (SQLite serializes writers anyway; open a second sq_db for reads
 * that must run alongside). A job that has started cannot be stopped: its
 * future completes when the statement has. */
#ifndef TN_EXAMPLE_SQLITE_H
#define TN_EXAMPLE_SQLITE_H

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define SQ__FN static __attribute__((unused))
#else
#define SQ__FN static
#endif

typedef struct sq_db {
    tn_loop *loop;
    sqlite3 *db;
    int jobs;    /* statements submitted and not yet ended */
    int closing; /* sq_close was called: the last job closes */
} sq_db;

/* The database's answer: rc is SQLITE_OK (rows, if any, are in cells) or
 * its error code with errmsg. Text cells, row-major, NULL for SQL NULL. */
typedef struct sq_result {
    int rc;
    char *errmsg;
    int ncols;
    size_t nrows;
    char **cells;        /* nrows * ncols */
    long long changes;   /* rows an INSERT, UPDATE or DELETE touched */
    long long last_id;   /* the rowid of the last INSERT */
} sq_result;

SQ__FN const char *sq_cell(const sq_result *r, size_t row, int col) {
    if (row >= r->nrows || col < 0 || col >= r->ncols) return NULL;
    return r->cells[row * (size_t)r->ncols + (size_t)col];
}

SQ__FN void sq_result_free(void *p) {
    sq_result *r = (sq_result *)p;
    size_t i;
    if (!r) return;
    for (i = 0; i < r->nrows * (size_t)r->ncols; i++) free(r->cells[i]);
    free(r->cells);
    free(r->errmsg);
    free(r);
}

static char *sq__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* --- open --- */
struct sq__open_job {
    tn_loop *loop;
    char path[1];
};
static int sq__open_work(void *arg, void **result) {
    struct sq__open_job *j = (struct sq__open_job *)arg;
    sq_db *d = (sq_db *)calloc(1, sizeof *d);
    int rc;
    if (!d) return TN_ENOMEM;
    rc = sqlite3_open_v2(j->path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "sqlite: %s: %s\n", j->path, d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc));
        sqlite3_close(d->db);
        free(d);
        return rc == SQLITE_NOMEM ? TN_ENOMEM : TN_EINVAL;
    }
    sqlite3_busy_timeout(d->db, 5000); /* another process holds the lock: wait for it */
    d->loop = j->loop;
    *result = d;
    return 0;
}
static void sq__db_free(void *p) {
    sq_db *d = (sq_db *)p;
    sqlite3_close(d->db);
    free(d);
}

/* Opens (creating) the file path on the executor: a future of an sq_db*
 * (yours: sq_close), or fails (TN_EINVAL: cannot open; the reason goes to
 * stderr). */
SQ__FN tn_future *sq_open(tn_loop *loop, const char *path) {
    struct sq__open_job *j = (struct sq__open_job *)malloc(sizeof *j + strlen(path));
    if (!j) return NULL;
    j->loop = loop;
    strcpy(j->path, path);
    return tn_run_in_executor_owned(loop, sq__open_work, j, free, sq__db_free);
}

/* Closes the database once its statements have ended (at once if none
 * runs). Loop thread. */
SQ__FN void sq_close(sq_db *d) {
    if (!d) return;
    d->closing = 1;
    if (!d->jobs) sq__db_free(d);
}

/* --- statements --- */
struct sq__job {
    sq_db *d;
    char *sql;
    int nparams;
    char **params; /* copies; NULL entries are SQL NULL */
};

static void sq__job_free(void *p) { /* on the loop thread, once the job is over */
    struct sq__job *j = (struct sq__job *)p;
    int i;
    for (i = 0; i < j->nparams; i++) free(j->params[i]);
    if (--j->d->jobs == 0 && j->d->closing) sq__db_free(j->d);
    free(j->params);
    free(j->sql);
    free(j);
}

/* Binds parameter i (0-based) where the SQL names it: $N or ?N, else the
 * N-th plain ?. */
static int sq__bind(sqlite3_stmt *st, int i, const char *value) {
    char name[16];
    int idx;
    snprintf(name, sizeof name, "$%d", i + 1);
    if (!(idx = sqlite3_bind_parameter_index(st, name))) {
        snprintf(name, sizeof name, "?%d", i + 1);
        if (!(idx = sqlite3_bind_parameter_index(st, name))) idx = i + 1;
    }
    if (!value) return sqlite3_bind_null(st, idx);
    return sqlite3_bind_text(st, idx, value, -1, SQLITE_TRANSIENT);
}

/* Appends the current row's cells to r. */
static int sq__add_row(sq_result *r, sqlite3_stmt *st, size_t *cap) {
    int c;
    size_t base = r->nrows * (size_t)r->ncols;
    if (base + (size_t)r->ncols > *cap) {
        size_t ncap = *cap ? *cap * 2 : 16 * (size_t)r->ncols;
        char **nc = (char **)realloc(r->cells, ncap * sizeof *nc);
        if (!nc) return SQLITE_NOMEM;
        r->cells = nc;
        *cap = ncap;
    }
    for (c = 0; c < r->ncols; c++) {
        const unsigned char *t = sqlite3_column_text(st, c);
        r->cells[base + (size_t)c] = NULL;
        if (t && !(r->cells[base + (size_t)c] = sq__strdup((const char *)t))) {
            while (c--) free(r->cells[base + (size_t)c]);
            return SQLITE_NOMEM;
        }
    }
    r->nrows++;
    return SQLITE_OK;
}

/* On a pool thread: prepare, bind, step to the end, finalize. */
static int sq__exec_work(void *arg, void **result) {
    struct sq__job *j = (struct sq__job *)arg;
    sqlite3 *db = j->d->db;
    sq_result *r = (sq_result *)calloc(1, sizeof *r);
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    int i, rc;
    if (!r) return TN_ENOMEM;
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    rc = sqlite3_prepare_v2(db, j->sql, -1, &st, NULL);
    for (i = 0; rc == SQLITE_OK && i < j->nparams; i++) rc = sq__bind(st, i, j->params[i]);
    if (rc == SQLITE_OK && st) {
        r->ncols = sqlite3_column_count(st);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            if ((rc = sq__add_row(r, st, &cap)) != SQLITE_OK) break;
        if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    r->rc = rc;
    if (rc != SQLITE_OK) r->errmsg = sq__strdup(sqlite3_errmsg(db));
    r->changes = sqlite3_changes(db);
    r->last_id = sqlite3_last_insert_rowid(db);
    sqlite3_finalize(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    *result = r;
    return 0;
}

/* Runs one statement with n text parameters (copied now) on the executor.
 * Resolves with an sq_result* (yours: sq_result_free) whenever the
 * database answered, its rc telling success or the error; fails only
 * without an answer (TN_ENOMEM, TN_ECANCELLED before it started). */
SQ__FN tn_future *sq_exec(sq_db *d, const char *sql, int n, const char *const *params) {
    struct sq__job *j = (struct sq__job *)calloc(1, sizeof *j);
    int i;
    if (!j) return NULL;
    j->d = d;
    d->jobs++; /* from here sq__job_free undoes everything */
    j->sql = sq__strdup(sql);
    j->params = (char **)calloc(n > 0 ? (size_t)n : 1, sizeof *j->params);
    if (!j->sql || !j->params) {
        sq__job_free(j);
        return NULL;
    }
    for (i = 0; i < n; i++, j->nparams++)
        if (params[i] && !(j->params[i] = sq__strdup(params[i]))) {
            sq__job_free(j);
            return NULL;
        }
    return tn_run_in_executor_owned(d->loop, sq__exec_work, j, sq__job_free, sq_result_free);
}

#endif
