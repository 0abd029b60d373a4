/* The HTTP server against real clients: curl, Python's http.client, wrk
 * and ApacheBench, talking to examples/httpbin (built by `make test` before
 * the suite runs; the suite runs from the repository root).
 *
 * Each test starts its own httpbin (--port 0) as a child process, reads the
 * "listening on http://127.0.0.1:PORT" line from its stdout, and at the end
 * stops it with SIGTERM and asserts a clean exit (status 0): that is the
 * graceful shutdown by signal, every time. A tool that is not installed is
 * skipped (a failure under CI=true). Tools run through popen(), each with
 * its own timeout option, and their exit status is checked. */
#include "tn_test.h"
#include "proc_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HTTPBIN "examples/httpbin"

static void msleep(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------ */
/* httpbin as a child process                                          */
/* ------------------------------------------------------------------ */

typedef struct httpbin {
    pid_t pid;
    int port;
} httpbin;

static void httpbin_start(httpbin *h) {
    int fds[2], n = 0;
    char line[256];
    size_t len = 0;
    REQUIRE(access(HTTPBIN, X_OK) == 0); /* `make test` builds the examples first */
    REQUIRE(pipe(fds) == 0);
    fflush(stdout);
    fflush(stderr);
    h->pid = fork();
    REQUIRE(h->pid >= 0);
    if (h->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
        close(fds[0]);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[1]);
        fds[1] = open("/dev/null", O_WRONLY); /* its stderr notes would only clutter */
        if (fds[1] >= 0) dup2(fds[1], STDERR_FILENO);
        signal(SIGPIPE, SIG_DFL);
        execl(HTTPBIN, "httpbin", "--port", "0", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    /* one line, within 10 s */
    while (len < sizeof line - 1) {
        struct pollfd p;
        ssize_t r;
        p.fd = fds[0];
        p.events = POLLIN;
        if (poll(&p, 1, 10000) <= 0) break;
        r = read(fds[0], line + len, sizeof line - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
        line[len] = 0;
        if (strchr(line, '\n')) break;
    }
    line[len] = 0;
    close(fds[0]);
    h->port = 0;
    n = sscanf(line, "listening on http://127.0.0.1:%d", &h->port);
    if (n != 1 || h->port <= 0) {
        fprintf(stderr, "    httpbin said: %s\n", line);
        kill(h->pid, SIGKILL);
        waitpid(h->pid, NULL, 0);
    }
    REQUIRE(n == 1 && h->port > 0);
}

/* SIGTERM, then waits (up to 10 s, then SIGKILL). Returns the wait status,
 * or -1 if it had to be killed. */
static int httpbin_stop(httpbin *h) {
    int status = 0, i;
    kill(h->pid, SIGTERM);
    for (i = 0; i < 1000; i++) {
        pid_t w = waitpid(h->pid, &status, WNOHANG);
        if (w == h->pid) return status;
        if (w < 0 && errno != EINTR) return -1;
        msleep(10);
    }
    kill(h->pid, SIGKILL);
    waitpid(h->pid, &status, 0);
    return -1;
}

#define STOP_CLEANLY(h)                                          \
    do {                                                         \
        int st_ = httpbin_stop(h);                               \
        CHECK(st_ != -1 && WIFEXITED(st_) && WEXITSTATUS(st_) == 0); \
    } while (0)

/* ------------------------------------------------------------------ */
/* Tools                                                               */
/* ------------------------------------------------------------------ */

/* The number after label in s (e.g. "Complete requests:"), or -1. */
static long number_after(const char *s, const char *label) {
    const char *p = strstr(s, label);
    if (!p) return -1;
    p += strlen(label);
    while (*p == ' ' || *p == '\t') p++;
    if (*p < '0' || *p > '9') return -1;
    return strtol(p, NULL, 10);
}

/* ------------------------------------------------------------------ */
/* curl                                                                */
/* ------------------------------------------------------------------ */

/* Two URLs in one invocation share the connection. */
TEST(curl_keep_alive_reuses_the_connection) {
    httpbin h;
    char cmd[512];
    char *out;
    int st;
    if (!have_tool("curl")) SKIP("curl not installed");
    httpbin_start(&h);
    snprintf(cmd, sizeof cmd,
             "curl -sv --max-time 10 http://127.0.0.1:%d/ 'http://127.0.0.1:%d/query?a=x%%20y&b=2' 2>&1",
             h.port, h.port);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    CHECK(strstr(out, "Hello, world!") != NULL);
    CHECK(strstr(out, "a=x y\nb=2\n") != NULL);
    /* curl 7.x says "Re-using existing connection", 8.x "Reusing existing" */
    CHECK(strstr(out, "Re-using existing connection") != NULL || strstr(out, "Reusing existing") != NULL);
    CHECK_EQ_INT(count(out, "Connection #0 to host 127.0.0.1 left intact"), 2);
    CHECK(strstr(out, "Connection #1") == NULL);
    free(out);
    STOP_CLEANLY(&h);
}

static unsigned long adler32(const unsigned char *p, size_t n) {
    unsigned long a = 1, b = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        a = (a + p[i]) % 65521;
        b = (b + a) % 65521;
    }
    return (b << 16) | a;
}

/* A chunked upload to the streamed-body route: length and checksum. */
TEST(curl_chunked_upload) {
    httpbin h;
    char path[] = "/tmp/tn_upload_XXXXXX";
    char cmd[512], want[128];
    size_t n = 3u * 1024 * 1024 + 17, i;
    unsigned char *data;
    char *out;
    int fd, st;
    uint32_t x = 12345;
    if (!have_tool("curl")) SKIP("curl not installed");
    data = (unsigned char *)malloc(n);
    REQUIRE(data != NULL);
    for (i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        data[i] = (unsigned char)(x >> 24);
    }
    fd = mkstemp(path);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, data, n) == (ssize_t)n);
    close(fd);
    snprintf(want, sizeof want, "length=%zu adler32=%08lx\n", n, adler32(data, n));
    httpbin_start(&h);
    snprintf(cmd, sizeof cmd,
             "curl -s --max-time 20 -H 'Transfer-Encoding: chunked' --data-binary @%s "
             "http://127.0.0.1:%d/upload 2>&1",
             path, h.port);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    CHECK(strcmp(out, want) == 0);
    if (strcmp(out, want) != 0) fprintf(stderr, "    got %s    want %s", out, want);
    free(out);
    /* the same through Content-Length (curl's default for a file) */
    snprintf(cmd, sizeof cmd, "curl -s --max-time 20 --data-binary @%s http://127.0.0.1:%d/upload 2>&1", path,
             h.port);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    CHECK(strcmp(out, want) == 0);
    free(out);
    unlink(path);
    free(data);
    STOP_CLEANLY(&h);
}

TEST(curl_http10) {
    httpbin h;
    char cmd[512];
    char *out;
    int st;
    if (!have_tool("curl")) SKIP("curl not installed");
    httpbin_start(&h);
    snprintf(cmd, sizeof cmd, "curl -s --max-time 10 --http1.0 -D - http://127.0.0.1:%d/ 2>&1", h.port);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    CHECK(strncmp(out, "HTTP/1.0 200 OK\r\n", 17) == 0);
    CHECK(strstr(out, "Content-Length: 13\r\n") != NULL);
    CHECK(strstr(out, "\r\n\r\nHello, world!") != NULL);
    free(out);
    /* a streamed body of unknown length: close-delimited for HTTP/1.0 */
    snprintf(cmd, sizeof cmd, "curl -s --max-time 10 --http1.0 -D - http://127.0.0.1:%d/stream/3 2>&1",
             h.port);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    CHECK(strncmp(out, "HTTP/1.0 200 OK\r\n", 17) == 0);
    CHECK(strstr(out, "Transfer-Encoding") == NULL);
    CHECK(strstr(out, "\r\n\r\nline 0\nline 1\nline 2\n") != NULL);
    free(out);
    STOP_CLEANLY(&h);
}

/* -I: HEAD. Two in one invocation: a body sent after the first would break
 * the second on the shared connection. */
TEST(curl_head) {
    httpbin h;
    char cmd[512];
    char *out;
    int st;
    if (!have_tool("curl")) SKIP("curl not installed");
    httpbin_start(&h);
    snprintf(cmd, sizeof cmd,
             "curl -s --max-time 10 -I http://127.0.0.1:%d/ http://127.0.0.1:%d/bytes/1000 2>&1", h.port,
             h.port);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    CHECK_EQ_INT(count(out, "HTTP/1.1 200 OK\r\n"), 2);
    CHECK(strstr(out, "Content-Length: 13\r\n") != NULL);
    CHECK(strstr(out, "Content-Length: 1000\r\n") != NULL);
    CHECK(strstr(out, "Hello") == NULL);
    CHECK(strstr(out, "abcdef") == NULL);
    free(out);
    STOP_CLEANLY(&h);
}

/* ------------------------------------------------------------------ */
/* Python's http.client                                                */
/* ------------------------------------------------------------------ */

/* One HTTPConnection: GET, POST, HEAD and a chunked stream, on the same
 * socket throughout. */
static const char py_script[] =
    "import http.client, sys\n"
    "c = http.client.HTTPConnection(\"127.0.0.1\", int(sys.argv[1]), timeout=10)\n"
    "c.request(\"GET\", \"/\")\n"
    "r = c.getresponse(); b = r.read()\n"
    "assert r.status == 200 and b == b\"Hello, world!\", (r.status, b)\n"
    "sock = c.sock\n"
    "body = bytes(range(256)) * 1000\n"
    "c.request(\"POST\", \"/echo\", body=body, headers={\"Content-Type\": \"application/x-test\"})\n"
    "r = c.getresponse(); b = r.read()\n"
    "assert r.status == 200 and b == body, (r.status, len(b))\n"
    "assert r.getheader(\"Content-Type\") == \"application/x-test\"\n"
    "c.request(\"HEAD\", \"/\")\n"
    "r = c.getresponse(); b = r.read()\n"
    "assert r.status == 200 and b == b\"\" and r.getheader(\"Content-Length\") == \"13\", r.getheaders()\n"
    "c.request(\"GET\", \"/stream/100\")\n"
    "r = c.getresponse()\n"
    "assert r.getheader(\"Transfer-Encoding\") == \"chunked\", r.getheaders()\n"
    "b = r.read()\n"
    "assert b.decode().splitlines() == [\"line %d\" % i for i in range(100)], b[:200]\n"
    "assert c.sock is sock, \"the connection was not kept\"\n"
    "print(\"OK\")\n";

TEST(python_http_client) {
    httpbin h;
    char cmd[4096];
    char *out;
    int st;
    if (!have_tool("/usr/bin/python3")) SKIP("python3 not installed");
    httpbin_start(&h);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c '%s' %d 2>&1", py_script, h.port);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    CHECK(strcmp(out, "OK\n") == 0);
    free(out);
    STOP_CLEANLY(&h);
}

/* ------------------------------------------------------------------ */
/* Load generators                                                     */
/* ------------------------------------------------------------------ */

TEST(wrk_no_errors) {
    httpbin h;
    char cmd[512];
    char *out;
    const char *se;
    long requests;
    int st;
    if (!have_tool("wrk")) SKIP("wrk not installed");
    httpbin_start(&h);
    snprintf(cmd, sizeof cmd, "wrk -t1 -c10 -d2s --timeout 5s http://127.0.0.1:%d/ 2>&1", h.port);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    /* "  N requests in 2.00s, ..." */
    {
        const char *p = strstr(out, " requests in ");
        requests = -1;
        if (p) {
            while (p > out && p[-1] >= '0' && p[-1] <= '9') p--;
            requests = strtol(p, NULL, 10);
        }
    }
    CHECK(requests > 0);
    se = strstr(out, "Socket errors:");
    if (se) {
        int a = -1, b = -1, c = -1, d = -1;
        CHECK_EQ_INT(sscanf(se, "Socket errors: connect %d, read %d, write %d, timeout %d", &a, &b, &c, &d), 4);
        CHECK(a == 0 && b == 0 && c == 0 && d == 0);
    }
    CHECK(strstr(out, "Non-2xx") == NULL);
    free(out);
    STOP_CLEANLY(&h);
}

TEST(ab_keep_alive_no_failures) {
    httpbin h;
    char cmd[512];
    char *out;
    int st;
    if (!have_tool("ab")) SKIP("ab not installed");
    httpbin_start(&h);
    snprintf(cmd, sizeof cmd, "ab -k -n 2000 -c 10 -s 10 http://127.0.0.1:%d/ 2>&1", h.port);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    CHECK_EQ_INT(number_after(out, "Complete requests:"), 2000);
    CHECK(strstr(out, "Failed requests:        0\n") != NULL);
    CHECK(strstr(out, "Non-2xx responses") == NULL);
    CHECK(strstr(out, "Keep-Alive requests:    2000\n") != NULL);
    free(out);
    STOP_CLEANLY(&h);
}

/* ------------------------------------------------------------------ */
/* Graceful shutdown by signal                                         */
/* ------------------------------------------------------------------ */

/* SIGTERM while a request is in flight (/delay/400): it still gets its
 * answer, then the process exits 0. Raw socket, no tool needed. */
TEST(sigterm_lets_a_request_in_flight_finish) {
    httpbin h;
    struct sockaddr_in sa;
    struct timeval tv = {10, 0};
    const char req[] = "GET /delay/400 HTTP/1.1\r\nHost: t\r\n\r\n";
    char buf[4096];
    size_t len = 0;
    int fd, st;
    httpbin_start(&h);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)h.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    REQUIRE(write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1));
    msleep(150); /* the request is read and its handler sleeps */
    kill(h.pid, SIGTERM);
    for (;;) { /* until the server closes */
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
    }
    buf[len] = 0;
    close(fd);
    CHECK(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(strstr(buf, "Connection: close\r\n") != NULL);
    CHECK(strstr(buf, "\r\n\r\ndone\n") != NULL);
    st = httpbin_stop(&h); /* already exiting: this only reaps it */
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
