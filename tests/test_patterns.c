/* The API patterns' primitives: awaiting an fd, a settled fan-out, one
 * result for many waiters, and the cache (TTL, LRU under a byte budget,
 * single-flight, invalidation, counters). */
#include "../tornado.h"
#include "tn_test.h"

#include <errno.h>
#include <unistd.h>

static tn_bytes *tn__test_bytes(tn_loop *l, const char *p, size_t n) {
    tn_bytes *b = tn_bytes_new_in(l, p, n); /* tn_bytes_new: see test_nomalloc.c */
    REQUIRE(b != NULL && b->len == n && b->data[n] == 0);
    return b;
}

static void cb_write_byte(tn_loop *l, void *arg) {
    (void)l;
    CHECK_EQ_INT(write((int)(intptr_t)arg, "x", 1), 1);
}

TEST(wait_fd_resolves_with_the_events_times_out_and_cancels) {
    tn_loop *l = new_loop();
    int p[2];
    void *v = NULL;
    tn_future *f;
    REQUIRE(pipe(p) == 0);
    /* readable later */
    CHECK_EQ_INT(tn_call_later(l, 5, cb_write_byte, (void *)(intptr_t)p[1], NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_wait_fd(l, p[0], TN_READ, 2000), 5000, &v), 0);
    CHECK((uintptr_t)v & TN_READ);
    /* writable at once */
    CHECK_EQ_INT(tn_run_sync(l, tn_wait_fd(l, p[1], TN_WRITE, 0), 5000, &v), 0);
    CHECK((uintptr_t)v & TN_WRITE);
    /* nothing comes: a timeout, and the fd is free again */
    {
        char c;
        CHECK_EQ_INT(read(p[0], &c, 1), 1);
    }
    CHECK_EQ_INT(tn_run_sync(l, tn_wait_fd(l, p[0], TN_READ, 10), 5000, NULL), TN_ETIMEOUT);
    /* cancelled: the fd is unregistered (another wait can start) */
    f = tn_wait_fd(l, p[0], TN_READ, 0);
    REQUIRE(f != NULL);
    CHECK_EQ_INT(tn_run_sync(l, tn_wait_fd(l, p[0], TN_READ, 0), 100, NULL), TN_EEXIST); /* one at a time */
    CHECK_EQ_INT(tn_future_cancel(f), 0);
    tn_future_release(f);
    CHECK_EQ_INT(tn_run_sync(l, tn_wait_fd(l, p[0], TN_READ, 5), 5000, NULL), TN_ETIMEOUT);
    CHECK_EQ_INT(tn_run_sync(l, tn_wait_fd(l, p[0], 0, 5), 5000, NULL), TN_EINVAL);
    close(p[0]);
    close(p[1]);
    FREE_LOOP_CLEAN(l);
}

static void cb_fail(tn_loop *l, void *arg) {
    (void)l;
    tn_future_fail((tn_future *)arg, -EIO);
}
static void cb_resolve(tn_loop *l, void *arg) {
    (void)l;
    tn_future_resolve((tn_future *)arg, (void *)"ok");
}

/* Every input's outcome, none ending it early. */
TEST(all_settled_reports_each_outcome) {
    tn_loop *l = new_loop();
    tn_future *fs[3];
    tn_settled res[3];
    fs[0] = tn_future_new(l);
    fs[1] = tn_future_new(l);
    fs[2] = tn_sleep(l, 20);
    REQUIRE(fs[0] && fs[1] && fs[2]);
    tn_call_later(l, 1, cb_fail, fs[0], NULL);
    tn_call_later(l, 5, cb_resolve, fs[1], NULL);
    CHECK_EQ_INT(tn_run_sync(l, tn_all_settled(l, fs, 3, res), 5000, NULL), 0);
    CHECK_EQ_INT(res[0].err, -EIO);
    CHECK(res[0].value == NULL);
    CHECK_EQ_INT(res[1].err, 0);
    CHECK(res[1].value && strcmp((const char *)res[1].value, "ok") == 0);
    CHECK_EQ_INT(res[2].err, 0);
    /* cancelled: its inputs are cancelled, and it fails */
    fs[0] = tn_sleep(l, 10000);
    fs[1] = tn_sleep(l, 10000);
    CHECK_EQ_INT(tn_run_sync(l, tn_all_settled(l, fs, 2, res), 10, NULL), TN_ETIMEOUT);
    CHECK_EQ_INT(tn_run_sync(l, tn_all_settled(l, NULL, 0, res), 100, NULL), 0);
    FREE_LOOP_CLEAN(l);
}

/* Three waiters of one computation: one result, the same value, the value
 * freed once with the shared. */
static int shared_frees;
static void shared_free_count(void *p) {
    shared_frees++;
    free(p);
}
static void cb_resolve_owned(tn_loop *l, void *arg) {
    char *v = strdup("answer");
    (void)l;
    tn_future_resolve_owned((tn_future *)arg, v, shared_free_count);
}
TEST(shared_result_for_many_waiters) {
    tn_loop *l = new_loop();
    tn_future *src = tn_future_new(l), *w[3];
    tn_shared *s;
    void *vals[3] = {0, 0, 0};
    int i;
    REQUIRE(src != NULL);
    s = tn_shared_new(l, src);
    REQUIRE(s != NULL);
    for (i = 0; i < 3; i++) REQUIRE((w[i] = tn_shared_wait(s)) != NULL);
    CHECK(!tn_shared_done(s));
    tn_call_later(l, 2, cb_resolve_owned, src, NULL);
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, w, 3, vals), 5000, NULL), 0);
    for (i = 0; i < 3; i++) CHECK(vals[i] == tn_shared_value(s));
    CHECK(strcmp((const char *)tn_shared_value(s), "answer") == 0);
    /* a late waiter gets it at once */
    CHECK_EQ_INT(tn_run_sync(l, tn_shared_wait(s), 1000, &vals[0]), 0);
    CHECK(vals[0] == tn_shared_value(s));
    CHECK_EQ_INT(shared_frees, 0);
    tn_shared_free(s);
    CHECK_EQ_INT(shared_frees, 1);
    /* failure reaches every waiter; freeing a pending one cancels it */
    src = tn_future_new(l);
    s = tn_shared_new(l, src);
    w[0] = tn_shared_wait(s);
    w[1] = tn_shared_wait(s);
    tn_future_fail(src, -EIO);
    CHECK_EQ_INT(tn_run_sync(l, w[0], 1000, NULL), -EIO);
    CHECK_EQ_INT(tn_run_sync(l, w[1], 1000, NULL), -EIO);
    tn_shared_free(s);
    s = tn_shared_new(l, tn_sleep(l, 100000));
    w[0] = tn_shared_wait(s);
    tn_shared_free(s);
    CHECK_EQ_INT(tn_run_sync(l, w[0], 1000, NULL), TN_ECANCELLED);
    FREE_LOOP_CLEAN(l);
}

/* ------------------------------------------------------------------ */
/* The cache                                                           */
/* ------------------------------------------------------------------ */

static int fills;
static int fill_fail;
struct fill_job {
    tn_loop *loop;
    tn_future *f;
    char key[64];
};
static void fill_finish(tn_loop *l, void *arg) {
    struct fill_job *j = (struct fill_job *)arg;
    char v[128];
    int n = snprintf(v, sizeof v, "value of %s", j->key);
    if (fill_fail) tn_future_fail(j->f, -EIO);
    else tn_future_resolve_owned(j->f, tn__test_bytes(l, v, (size_t)n), tn_bytes_free);
    free(j);
}
static tn_future *slow_fill(const char *key, void *arg) {
    struct fill_job *j = (struct fill_job *)malloc(sizeof *j);
    tn_loop *l = (tn_loop *)arg;
    fills++;
    j->loop = l;
    j->f = tn_future_new(l);
    snprintf(j->key, sizeof j->key, "%s", key);
    tn_call_later(l, 10, fill_finish, j, NULL); /* a slow "database" */
    return j->f;
}

static int bytes_is(void *v, const char *s) {
    tn_bytes *b = (tn_bytes *)v;
    int ok = b && b->len == strlen(s) && memcmp(b->data, s, b->len) == 0;
    tn_bytes_free(b);
    return ok;
}

/* 100 concurrent misses of one key: one fill; every fetch gets the value;
 * the next fetch is a hit. */
TEST(cache_single_flight_100_misses_one_fill) {
    tn_loop *l = new_loop();
    tn_cache *c;
    tn_future *fs[100];
    void *vals[100];
    tn_cache_stats st;
    int i, good = 0;
    REQUIRE(tn_cache_new(l, NULL, &c) == 0);
    fills = 0;
    fill_fail = 0;
    for (i = 0; i < 100; i++) REQUIRE((fs[i] = tn_cache_fetch(c, "todos", 0, slow_fill, l)) != NULL);
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, 100, vals), 5000, NULL), 0);
    CHECK_EQ_INT(fills, 1);
    for (i = 0; i < 100; i++) good += bytes_is(vals[i], "value of todos");
    CHECK_EQ_INT(good, 100);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_fetch(c, "todos", 0, slow_fill, l), 5000, &vals[0]), 0);
    CHECK(bytes_is(vals[0], "value of todos"));
    CHECK_EQ_INT(fills, 1);
    /* counted per fetch: 100 misses answered by one fill, then one hit;
     * 50 concurrent hits are 50 */
    tn_cache_get_stats(c, &st);
    CHECK_EQ_INT(st.fills, 1);
    CHECK_EQ_INT(st.misses, 100);
    CHECK_EQ_INT(st.hits, 1);
    CHECK_EQ_INT(st.entries, 1);
    CHECK_EQ_INT(st.waiters, 0);
    for (i = 0; i < 50; i++) REQUIRE((fs[i] = tn_cache_fetch(c, "todos", 0, slow_fill, l)) != NULL);
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, 50, vals), 5000, NULL), 0);
    for (i = 0; i < 50; i++) tn_bytes_free(vals[i]);
    tn_cache_get_stats(c, &st);
    CHECK_EQ_INT(st.hits, 51);
    CHECK_EQ_INT(st.fills, 1);
    tn_cache_free(c);
    FREE_LOOP_CLEAN(l);
}

/* A write while a fill runs: the fill may have read what was there before
 * it, so its waiters get it (they asked before the write) but the cache
 * does not keep it, and a fetch after the write does not join it: it
 * computes afresh. Both for a delete and a set of the key, and a prefix. */
static tn_future *held_fill_f;
static const char *held_value = "old";
static tn_future *held_fill(const char *key, void *arg) {
    (void)key;
    fills++;
    return held_fill_f = tn_future_new((tn_loop *)arg);
}
TEST(cache_write_during_a_fill_is_not_undone_by_it) {
    tn_loop *l = new_loop();
    tn_cache *c;
    int how;
    REQUIRE(tn_cache_new(l, NULL, &c) == 0);
    for (how = 0; how < 3; how++) {
        tn_future *before, *after, *fb;
        void *v = NULL;
        fills = 0;
        before = tn_cache_fetch(c, "id:1", 0, held_fill, l);
        tn_run_sync(l, tn_sleep(l, 1), 0, NULL); /* the lookup misses, the fill starts */
        REQUIRE(fills == 1 && held_fill_f != NULL);
        fb = held_fill_f;
        if (how == 0) tn_future_release(tn_cache_delete(c, "id:1"));
        else if (how == 1) tn_future_release(tn_cache_delete_prefix(c, "id:"));
        else tn_future_release(tn_cache_set(c, "id:1", "new", 3, 0));
        after = tn_cache_fetch(c, "id:1", 0, slow_fill, l);
        tn_future_resolve_owned(fb, tn__test_bytes(l, held_value, 3), tn_bytes_free); /* the stale read */
        CHECK_EQ_INT(tn_run_sync(l, before, 5000, &v), 0);
        CHECK(bytes_is(v, "old"));
        CHECK_EQ_INT(tn_run_sync(l, after, 5000, &v), 0);
        /* a set is there to be found; after a delete a new fill runs */
        CHECK(bytes_is(v, how == 2 ? "new" : "value of id:1"));
        CHECK_EQ_INT(fills, how == 2 ? 1 : 2);
        CHECK_EQ_INT(tn_run_sync(l, tn_cache_get(c, "id:1"), 5000, &v), 0);
        CHECK(bytes_is(v, how == 2 ? "new" : "value of id:1")); /* never "old" */
        tn_future_release(tn_cache_delete(c, "id:1"));
    }
    tn_cache_free(c);
    FREE_LOOP_CLEAN(l);
}

/* A failed fill wakes every waiter with the error and is not cached. */
TEST(cache_failed_fill_fails_all_and_is_not_cached) {
    tn_loop *l = new_loop();
    tn_cache *c;
    tn_future *fs[5];
    tn_settled res[5];
    int i;
    REQUIRE(tn_cache_new(l, NULL, &c) == 0);
    fills = 0;
    fill_fail = 1;
    for (i = 0; i < 5; i++) fs[i] = tn_cache_fetch(c, "k", 0, slow_fill, l);
    CHECK_EQ_INT(tn_run_sync(l, tn_all_settled(l, fs, 5, res), 5000, NULL), 0);
    for (i = 0; i < 5; i++) CHECK_EQ_INT(res[i].err, -EIO);
    CHECK_EQ_INT(fills, 1);
    fill_fail = 0;
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_fetch(c, "k", 0, slow_fill, l), 5000, &res[0].value), 0);
    CHECK(bytes_is(res[0].value, "value of k"));
    CHECK_EQ_INT(fills, 2);
    tn_cache_free(c);
    FREE_LOOP_CLEAN(l);
}

/* TTL: an entry expires; LRU: the least recently used goes when the budget
 * is spent; invalidation of a key, a prefix, everything. */
TEST(cache_ttl_lru_budget_and_invalidation) {
    tn_loop *l = new_loop();
    tn_cache *c;
    tn_cache_opts o;
    tn_cache_stats st;
    void *v;
    char val[1000];
    memset(&o, 0, sizeof o);
    o.max_bytes = 3 * (sizeof val + 64 + 16); /* three entries */
    memset(val, 'v', sizeof val);
    REQUIRE(tn_cache_new(l, &o, &c) == 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_set(c, "a", val, sizeof val, 0), 1000, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_set(c, "b", val, sizeof val, 0), 1000, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_set(c, "c", val, sizeof val, 0), 1000, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_get(c, "a"), 1000, &v), 0); /* a is now the newest */
    CHECK(v != NULL);
    tn_bytes_free(v);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_set(c, "d", val, sizeof val, 0), 1000, NULL), 0); /* b goes */
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_get(c, "b"), 1000, &v), 0);
    CHECK(v == NULL);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_get(c, "a"), 1000, &v), 0);
    CHECK(v != NULL);
    tn_bytes_free(v);
    tn_cache_get_stats(c, &st);
    CHECK_EQ_INT(st.evictions, 1);
    CHECK_EQ_INT(st.entries, 3);
    CHECK(st.bytes <= o.max_bytes);
    /* too large for the budget */
    {
        static char huge[8000];
        CHECK_EQ_INT(tn_run_sync(l, tn_cache_set(c, "h", huge, sizeof huge, 0), 1000, NULL), TN_ETOOLARGE);
    }
    /* TTL */
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_set(c, "t", "x", 1, 20), 1000, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_sleep(l, 40), 1000, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_get(c, "t"), 1000, &v), 0);
    CHECK(v == NULL);
    tn_cache_get_stats(c, &st);
    CHECK(st.expirations >= 1);
    /* invalidation */
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_set(c, "user:1", "1", 1, 0), 1000, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_set(c, "user:2", "2", 1, 0), 1000, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_delete(c, "a"), 1000, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_get(c, "a"), 1000, &v), 0);
    CHECK(v == NULL);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_delete_prefix(c, "user:"), 1000, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_get(c, "user:2"), 1000, &v), 0);
    CHECK(v == NULL);
    CHECK_EQ_INT(tn_run_sync(l, tn_cache_delete_prefix(c, NULL), 1000, NULL), 0);
    tn_cache_get_stats(c, &st);
    CHECK_EQ_INT(st.entries, 0);
    CHECK_EQ_INT(st.bytes, 0);
    tn_cache_free(c);
    FREE_LOOP_CLEAN(l);
}

/* Freed with fetches in flight: they fail, the fill is cancelled, nothing
 * leaks (FREE_LOOP_CLEAN). */
TEST(cache_free_with_fetches_in_flight) {
    tn_loop *l = new_loop();
    tn_cache *c;
    tn_future *f;
    REQUIRE(tn_cache_new(l, NULL, &c) == 0);
    f = tn_cache_fetch(c, "x", 0, slow_fill, l);
    CHECK_EQ_INT(tn_loop_step(l, 0), 0);
    tn_cache_free(c);
    CHECK(tn_future_done(f));
    CHECK_EQ_INT(tn_future_error(f), TN_ECANCELLED);
    tn_future_release(f);
    CHECK_EQ_INT(tn_run_sync(l, tn_sleep(l, 30), 1000, NULL), 0); /* the slow fill finishes into nothing */
    FREE_LOOP_CLEAN(l);
}
