/* tn_test.h: the minimal test harness of tornado.h's suite.
 *
 * A test is `TEST(name) { ... }` in any tests/test_*.c file. Tests register
 * themselves before main() runs; tests/main.c runs each one in a forked child
 * (so a crash or a hang fails that test only, never the run) with an alarm,
 * and ends with the line "N passed, N failed".
 *
 * CHECK(cond) records a failure and goes on; REQUIRE(cond) stops the test.
 * A test that made no CHECK/REQUIRE at all counts as failed: an assertion-free
 * test proves nothing.
 */
#ifndef TN_TEST_H
#define TN_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*tn_test_fn)(void);

void tn_test_register(const char *file, const char *name, tn_test_fn fn);
void tn_test_fail(const char *file, int line, const char *expr);
void tn_test_skip(const char *why);
extern int tn_test_checks; /* per child process: assertions evaluated */

#define TEST(name)                                                        \
    static void test_##name(void);                                        \
    __attribute__((constructor)) static void test_register_##name(void) { \
        tn_test_register(__FILE__, #name, test_##name);                   \
    }                                                                     \
    static void test_##name(void)

#define CHECK(cond)                                                   \
    do {                                                              \
        tn_test_checks++;                                             \
        if (!(cond)) tn_test_fail(__FILE__, __LINE__, #cond);         \
    } while (0)

#define REQUIRE(cond)                                                 \
    do {                                                              \
        tn_test_checks++;                                             \
        if (!(cond)) {                                                \
            tn_test_fail(__FILE__, __LINE__, #cond);                  \
            exit(1);                                                  \
        }                                                             \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                    \
    do {                                                                      \
        long long tn_a_ = (long long)(a), tn_b_ = (long long)(b);             \
        tn_test_checks++;                                                     \
        if (tn_a_ != tn_b_) {                                                 \
            fprintf(stderr, "    %s = %lld, %s = %lld\n", #a, tn_a_, #b, tn_b_); \
            tn_test_fail(__FILE__, __LINE__, #a " == " #b);                   \
        }                                                                     \
    } while (0)

/* Skips the test (prints "skipped: why"). Under CI=true a skip is a failure:
 * CI installs every tool, so a missing one there is a broken CI script. */
#define SKIP(why)                \
    do {                         \
        tn_test_skip(why);       \
        return;                  \
    } while (0)

/* For the suites of the core runtime (included after tornado.h): a loop
 * that must exist, and its end, which first proves nothing was left
 * behind: no future, timer, coroutine, executor job or fd handler. */
#ifdef TORNADO_H
#define FREE_LOOP_CLEAN(l)                    \
    do {                                      \
        tn_loop_stats st_;                    \
        tn_loop_get_stats((l), &st_);         \
        CHECK_EQ_INT(st_.futures, 0);         \
        CHECK_EQ_INT(st_.timers, 0);          \
        CHECK_EQ_INT(st_.coroutines, 0);      \
        CHECK_EQ_INT(st_.jobs, 0);            \
        CHECK_EQ_INT(st_.handlers, 0);        \
        tn_loop_free(l);                      \
    } while (0)

/* tn_loop_new for the suite: under TN_NO_MALLOC every loop needs a region
 * (tn_loop_opts.heap); each gets TEST_REGION_SIZE bytes of mmap'd address
 * space (pages cost only once touched), never unmapped: each test is a
 * child process of its own. The tests themselves may use malloc; only the
 * library may not. */
#ifdef TN_NO_MALLOC
#include <sys/mman.h>
#ifndef TEST_REGION_SIZE
#define TEST_REGION_SIZE ((size_t)256 << 20)
#endif
#endif
static inline int test_loop_new(tn_loop **out, const tn_loop_opts *opts) {
    tn_loop_opts o;
    if (opts) o = *opts;
    else memset(&o, 0, sizeof o);
#ifdef TN_NO_MALLOC
    if (!o.heap) {
        o.heap = mmap(NULL, TEST_REGION_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (o.heap == MAP_FAILED) return TN_ENOMEM;
        o.heap_size = TEST_REGION_SIZE;
    }
#endif
    return tn_loop_new(out, &o);
}

static inline tn_loop *new_loop(void) {
    tn_loop *l = NULL;
    REQUIRE(test_loop_new(&l, NULL) == 0);
    REQUIRE(l != NULL);
    return l;
}
#endif

#endif
