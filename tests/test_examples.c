/* The examples, run as a user would: the README's coroutine example
 * (compiled from tests/readme_example.c), fetch and crawler, each against a
 * real examples/httpbin started here. Run from the repository root. */
#include "../tornado.h"
#include "tn_test.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Starts examples/httpbin on a free port; returns its pid, *port set. */
static pid_t start_httpbin(int *port) {
    int fds[2];
    pid_t pid;
    char line[256];
    FILE *out;
    if (pipe(fds) < 0) return -1;
    pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl("examples/httpbin", "httpbin", "--port", "0", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    out = fdopen(fds[0], "r");
    *port = 0;
    if (out && fgets(line, sizeof line, out)) sscanf(line, "listening on http://127.0.0.1:%d", port);
    if (out) fclose(out);
    return pid;
}

/* SIGTERM (a graceful shutdown), then its exit status. */
static int stop(pid_t pid) {
    int status = 0;
    kill(pid, SIGTERM);
    if (waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Runs cmd; its output goes to buf. Returns the exit status. */
static int run(const char *cmd, char *buf, size_t cap) {
    FILE *p = popen(cmd, "r");
    size_t n = 0, r;
    int status;
    if (!p) return -1;
    while (n + 1 < cap && (r = fread(buf + n, 1, cap - 1 - n, p)) > 0) n += r;
    buf[n] = 0;
    status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(readme_coroutine_example_fetches_three_urls) {
    static char out[4096];
    char cmd[512];
    int port, rc;
    pid_t pid = start_httpbin(&port);
    REQUIRE(pid > 0 && port > 0);
    snprintf(cmd, sizeof cmd,
             "cc -std=c99 -Wall -Wextra -Werror -D'BASE=\"http://127.0.0.1:%d\"' -o tests/readme_example "
             "tests/readme_example.c -pthread 2>&1 && ./tests/readme_example 2>&1",
             port);
    rc = run(cmd, out, sizeof out);
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, "/ -> 200, 13 bytes") != NULL);
    CHECK(strstr(out, "/headers -> 200") != NULL);
    CHECK(strstr(out, "/delay/100 -> 200, 5 bytes") != NULL);
    if (rc) fprintf(stderr, "%s\n", out);
    CHECK_EQ_INT(stop(pid), 0);
    unlink("tests/readme_example");
}

TEST(fetch_example_prints_in_order_and_fails_on_errors) {
    static char out[8192];
    char cmd[512];
    int port;
    pid_t pid = start_httpbin(&port);
    REQUIRE(pid > 0 && port > 0);
    /* two URLs, fetched at once, printed in the order given */
    snprintf(cmd, sizeof cmd, "./examples/fetch http://127.0.0.1:%d/delay/100 http://127.0.0.1:%d/", port, port);
    CHECK_EQ_INT(run(cmd, out, sizeof out), 0);
    CHECK_EQ_INT(strcmp(out, "done\nHello, world!"), 0);
    /* -i, -X, -d, -H */
    snprintf(cmd, sizeof cmd, "./examples/fetch -i -X PUT -d payload -H 'Content-Type: text/x-test' http://127.0.0.1:%d/echo",
             port);
    CHECK_EQ_INT(run(cmd, out, sizeof out), 0);
    CHECK(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(strstr(out, "Content-Type: text/x-test\r\n") != NULL);
    CHECK(strstr(out, "\r\n\r\npayload") != NULL);
    /* a 404 and a refused connection: non-zero, reasons on stderr */
    snprintf(cmd, sizeof cmd, "./examples/fetch http://127.0.0.1:%d/nope 2>&1", port);
    CHECK(run(cmd, out, sizeof out) != 0);
    CHECK(strstr(out, "HTTP 404") != NULL);
    CHECK(run("./examples/fetch http://127.0.0.1:1/ 2>&1", out, sizeof out) != 0);
    CHECK(strstr(out, "connection refused") != NULL);
    /* https to a closed port: refused (a TLS build), or TLS unsupported
     * (without one); tests/tls.c fetches over https for real */
    CHECK(run("./examples/fetch https://127.0.0.1:1/ 2>&1", out, sizeof out) != 0);
    CHECK(strstr(out, "connection refused") != NULL || strstr(out, "TLS") != NULL);
    CHECK_EQ_INT(stop(pid), 0);
}

TEST(crawler_example_visits_every_page_once) {
    static char out[16384];
    char cmd[256];
    int port, i, n = 0;
    char *p;
    pid_t pid = start_httpbin(&port);
    REQUIRE(pid > 0 && port > 0);
    snprintf(cmd, sizeof cmd, "./examples/crawler -n 5 http://127.0.0.1:%d/site/", port);
    CHECK_EQ_INT(run(cmd, out, sizeof out), 0);
    /* 40 pages (the index is page 0) plus the missing one, each once */
    for (i = 1; i < 40; i++) {
        char want[64];
        snprintf(want, sizeof want, "200 http://127.0.0.1:%d/site/%d\n", port, i);
        p = strstr(out, want);
        CHECK(p != NULL);
        if (p) CHECK(strstr(p + 1, want) == NULL);
    }
    CHECK(strstr(out, "/site/missing") != NULL && strstr(out, "404 http") != NULL);
    CHECK(strstr(out, "elsewhere.invalid") == NULL); /* not under the base */
    for (p = out; (p = strchr(p, '\n')) != NULL; p++) n++;
    CHECK_EQ_INT(n, 42); /* 41 URLs and the summary */
    CHECK(strstr(out, "crawled 41 URLs, 0 failed") != NULL);
    CHECK_EQ_INT(stop(pid), 0);
}

TEST(httpbin_proxy_maps_upstream_failures) {
    static char out[4096];
    char cmd[512];
    int port;
    pid_t pid = start_httpbin(&port);
    REQUIRE(pid > 0 && port > 0);
    /* the proxy calls httpbin itself while serving: the loop is not blocked */
    snprintf(cmd, sizeof cmd, "./examples/fetch 'http://127.0.0.1:%d/proxy?url=http://127.0.0.1:%d/query%%3Fa%%3D1'",
             port, port);
    CHECK_EQ_INT(run(cmd, out, sizeof out), 0);
    CHECK_EQ_INT(strcmp(out, "a=1\nb=(none)\n"), 0);
    snprintf(cmd, sizeof cmd, "./examples/fetch -i 'http://127.0.0.1:%d/proxy?url=http://127.0.0.1:1/' 2>/dev/null", port);
    run(cmd, out, sizeof out);
    CHECK(strncmp(out, "HTTP/1.1 502", 12) == 0);
    snprintf(cmd, sizeof cmd,
             "./examples/fetch -i 'http://127.0.0.1:%d/proxy?timeout=50&url=http://127.0.0.1:%d/delay/3000' 2>/dev/null",
             port, port);
    run(cmd, out, sizeof out);
    CHECK(strncmp(out, "HTTP/1.1 504", 12) == 0);
    CHECK_EQ_INT(stop(pid), 0);
}

/* examples/hello (make run's server) refuses what it cannot honour, rather
 * than serving on a port nobody asked for: atoi("x") was port 0, an
 * ephemeral port, and an unknown option became one too. */
TEST(hello_example_rejects_bad_arguments) {
    static char out[1024];
    static const char *bad[] = {"--port x", "--bogus", "99999", "--workers 0", "--port", "--port 80x"};
    char cmd[256];
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, "./examples/hello %s 2>&1", bad[i]);
        CHECK_EQ_INT(run(cmd, out, sizeof out), 2);
        CHECK(strstr(out, "usage: hello") != NULL);
    }
}
