/* The test runner: runs every registered TEST in a forked child with an
 * alarm, so one crash or hang fails one test. Ends with "N passed, N failed".
 * Usage: tn_tests [substring]   (only tests whose file:name contains it) */
#include "tn_test.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef TN_TEST_TIMEOUT_S
#define TN_TEST_TIMEOUT_S 60
#endif
#define MAX_TESTS 2048

struct test {
    const char *file, *name;
    tn_test_fn fn;
};
static struct test tests[MAX_TESTS];
static int ntests;
int tn_test_checks;
static int test_failed;

void tn_test_register(const char *file, const char *name, tn_test_fn fn) {
    if (ntests == MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        exit(2);
    }
    tests[ntests].file = file;
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
}

void tn_test_fail(const char *file, int line, const char *expr) {
    fprintf(stderr, "    %s:%d: CHECK failed: %s\n", file, line, expr);
    test_failed = 1;
}

/* Exit code 77 from a child means skipped. */
void tn_test_skip(const char *why) {
    const char *ci = getenv("CI");
    printf("    skipped: %s\n", why);
    fflush(stdout);
    if (ci && strcmp(ci, "true") == 0) {
        fprintf(stderr, "    (a skip is a failure under CI=true)\n");
        exit(1);
    }
    exit(77);
}

static const char *base(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int main(int argc, char **argv) {
    int passed = 0, failed = 0, skipped = 0, i;
    const char *only = argc > 1 ? argv[1] : NULL;
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (i = 0; i < ntests; i++) {
        char label[256];
        pid_t pid;
        int status = 0;
        snprintf(label, sizeof label, "%s:%s", base(tests[i].file), tests[i].name);
        if (only && !strstr(label, only)) continue;
        printf("%s\n", label);
        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid == 0) {
            alarm(TN_TEST_TIMEOUT_S);
            tn_test_checks = 0;
            test_failed = 0;
            tests[i].fn();
            if (tn_test_checks == 0) {
                fprintf(stderr, "    no assertion was made: a test must be able to fail\n");
                exit(1);
            }
            exit(test_failed ? 1 : 0);
        }
        if (pid < 0 || waitpid(pid, &status, 0) < 0) {
            perror("fork/waitpid");
            return 2;
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            passed++;
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
            skipped++;
        } else {
            failed++;
            if (WIFSIGNALED(status))
                printf("    FAILED: %s (signal %d%s)\n", label, WTERMSIG(status),
                       WTERMSIG(status) == SIGALRM ? ", timed out" : "");
            else
                printf("    FAILED: %s\n", label);
        }
    }
    if (skipped) printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    else printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
