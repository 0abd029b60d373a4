/* examples/httpbin as httpbin.org: tests/httpbin_diff.py starts it and
 * Debian's python3-httpbin (the reference) side by side, sends each of its
 * cases to both and compares status, headers and bodies; it must end with
 * "N passed, 0 failed" (its known, documented differences pass). And
 * httpbin's --static DIR (tn_http_static), which the harness does not
 * cover, through curl. Run from the repository root with the examples
 * built, as `make test` does. A missing tool is a SKIP (a failure under
 * CI=true: .ci/run installs python3-httpbin and curl). */
#include "tn_test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PYTHON "/usr/bin/python3" /* Debian's, with the httpbin module (not a pyenv shim) */

/* Runs cmd through the shell: its output (stdout and stderr, malloc'd) and
 * *status its exit status (-1 if it did not exit). */
static char *run(const char *cmd, int *status) {
    FILE *p;
    char *out = NULL;
    size_t len = 0, cap = 0;
    int st;
    fflush(stdout);
    fflush(stderr);
    REQUIRE((p = popen(cmd, "r")) != NULL);
    for (;;) {
        size_t n;
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 65536;
            REQUIRE((out = (char *)realloc(out, cap)) != NULL);
        }
        if ((n = fread(out + len, 1, cap - len - 1, p)) == 0) break;
        len += n;
    }
    out[len] = 0;
    st = pclose(p);
    *status = st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

/* The last line of out (without its newline), in place. */
static const char *last_line(char *out) {
    size_t n = strlen(out);
    char *nl;
    while (n && out[n - 1] == '\n') out[--n] = 0;
    nl = strrchr(out, '\n');
    return nl ? nl + 1 : out;
}

static int have_reference(void) {
    int st;
    char *out;
    if (access(PYTHON, X_OK) != 0) return 0;
    out = run(PYTHON " -c 'import httpbin, werkzeug' 2>&1", &st);
    free(out);
    return st == 0;
}

TEST(httpbin_answers_as_the_reference_httpbin) {
    char *out, *line, *next;
    const char *last;
    int st, printed = 0;
    if (!have_reference()) SKIP("python3-httpbin not installed");
    REQUIRE(access("examples/httpbin", X_OK) == 0); /* `make test` builds the examples first */
    out = run(PYTHON " tests/httpbin_diff.py 2>&1", &st);
    CHECK_EQ_INT(st, 0);
    /* every difference is a DIFF line: show those (the whole output is long) */
    for (line = out; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (strstr(line, "DIFF:")) {
            fprintf(stderr, "    %s\n", line);
            printed++;
        }
        if (next) next[-1] = '\n';
    }
    last = last_line(out);
    if (st != 0 && !printed) fprintf(stderr, "    httpbin_diff.py said:\n%s\n", out);
    CHECK(strstr(last, " passed, 0 failed") != NULL && atoi(last) > 100);
    if (!strstr(last, " passed, 0 failed")) fprintf(stderr, "    last line: %s\n", last);
    free(out);
}

/* ------------------------------------------------------------------ */
/* --static DIR                                                        */
/* ------------------------------------------------------------------ */

static void msleep(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* examples/httpbin --port 0 --static dir as a child: its pid, *port from
 * its "listening on" line (0 if it did not start). */
static pid_t start_static(const char *dir, int *port) {
    int fds[2];
    char line[256];
    size_t len = 0;
    pid_t pid;
    REQUIRE(access("examples/httpbin", X_OK) == 0);
    REQUIRE(pipe(fds) == 0);
    fflush(stdout);
    fflush(stderr);
    REQUIRE((pid = fork()) >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
        close(fds[0]);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[1]);
        execl("examples/httpbin", "httpbin", "--port", "0", "--static", dir, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    while (len < sizeof line - 1 && !memchr(line, '\n', len)) {
        struct pollfd p;
        ssize_t r;
        p.fd = fds[0];
        p.events = POLLIN;
        if (poll(&p, 1, 10000) <= 0 || (r = read(fds[0], line + len, sizeof line - 1 - len)) <= 0) break;
        len += (size_t)r;
    }
    line[len] = 0;
    close(fds[0]);
    *port = 0;
    if (sscanf(line, "listening on http://127.0.0.1:%d", port) != 1) *port = 0;
    return pid;
}

/* SIGTERM, then its exit status (-1 if it had to be killed after 10 s). */
static int stop(pid_t pid) {
    int status = 0, i;
    kill(pid, SIGTERM);
    for (i = 0; i < 1000; i++) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (w < 0 && errno != EINTR) return -1;
        msleep(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    REQUIRE((f = fopen(path, "w")) != NULL);
    fputs(text, f);
    fclose(f);
}

/* curl -si (head and body) of http://127.0.0.1:port/path with options. */
static char *curl(int port, const char *opts, const char *path, int *status) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "curl -si --max-time 10 --path-as-is %s 'http://127.0.0.1:%d%s' 2>&1", opts, port, path);
    return run(cmd, status);
}

TEST(httpbin_static_serves_a_directory) {
    char dir[] = "/tmp/tn_httpbin_static_XXXXXX", sub[600], etag[64], opt[128], *out;
    const char *p;
    int port, st;
    pid_t pid;
    if (access("/usr/bin/curl", X_OK) != 0) SKIP("curl not installed");
    REQUIRE(mkdtemp(dir) != NULL);
    snprintf(sub, sizeof sub, "%s/sub", dir);
    REQUIRE(mkdir(sub, 0755) == 0);
    write_file(dir, "a.txt", "hello, static\n");
    write_file(dir, "index.html", "<p>the index</p>\n");
    write_file(dir, "sub/style.css", "body { margin: 0 }\n");
    pid = start_static(dir, &port);
    REQUIRE(port > 0);

    /* a file: its type from the extension, length, validators */
    out = curl(port, "", "/static/a.txt", &st);
    CHECK_EQ_INT(st, 0);
    CHECK(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(strstr(out, "Content-Type: text/plain") != NULL);
    CHECK(strstr(out, "Content-Length: 14\r\n") != NULL);
    CHECK(strstr(out, "Last-Modified: ") != NULL);
    CHECK(strstr(out, "\r\n\r\nhello, static\n") != NULL);
    etag[0] = 0;
    if ((p = strstr(out, "ETag: ")) != NULL) sscanf(p + 6, "%63[^\r]", etag);
    CHECK(etag[0] == '"');
    free(out);

    /* If-None-Match with its ETag: 304; a range: 206 */
    snprintf(opt, sizeof opt, "-H 'If-None-Match: %s'", etag);
    out = curl(port, opt, "/static/a.txt", &st);
    CHECK(strncmp(out, "HTTP/1.1 304 Not Modified\r\n", 27) == 0);
    free(out);
    out = curl(port, "-H 'Range: bytes=7-12'", "/static/a.txt", &st);
    CHECK(strncmp(out, "HTTP/1.1 206 Partial Content\r\n", 30) == 0);
    CHECK(strstr(out, "Content-Range: bytes 7-12/14\r\n") != NULL);
    CHECK(strstr(out, "\r\n\r\nstatic") != NULL);
    free(out);

    /* the directory's index; a file below; HEAD */
    out = curl(port, "", "/static/", &st);
    CHECK(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(strstr(out, "Content-Type: text/html") != NULL);
    CHECK(strstr(out, "<p>the index</p>") != NULL);
    free(out);
    out = curl(port, "-I", "/static/sub/style.css", &st);
    CHECK(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(strstr(out, "Content-Type: text/css") != NULL);
    CHECK(strstr(out, "Content-Length: 19\r\n") != NULL);
    CHECK(strstr(out, "margin") == NULL);
    free(out);

    /* nothing outside the directory, nothing missing */
    out = curl(port, "", "/static/../tornado.h", &st);
    CHECK(strncmp(out, "HTTP/1.1 404", 12) == 0);
    free(out);
    out = curl(port, "", "/static/%2e%2e/tornado.h", &st);
    CHECK(strncmp(out, "HTTP/1.1 404", 12) == 0);
    free(out);
    out = curl(port, "", "/static/missing.txt", &st);
    CHECK(strncmp(out, "HTTP/1.1 404", 12) == 0);
    free(out);

    /* httpbin's own routes are still there */
    out = curl(port, "", "/get", &st);
    CHECK(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(strstr(out, "\"url\":\"http://127.0.0.1:") != NULL);
    free(out);
    CHECK_EQ_INT(stop(pid), 0);

    snprintf(sub, sizeof sub, "rm -rf '%s'", dir);
    CHECK_EQ_INT(system(sub), 0);
}

/* A --static that is no directory: a usage error (exit 2), no server. */
TEST(httpbin_static_refuses_a_missing_directory) {
    int st;
    char *out = run("examples/httpbin --port 0 --static /nonexistent/tn_httpbin 2>&1", &st);
    CHECK_EQ_INT(st, 2);
    CHECK(strstr(out, "--static /nonexistent/tn_httpbin") != NULL);
    CHECK(strstr(out, "listening on") == NULL);
    free(out);
}
