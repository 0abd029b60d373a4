/* bench/counts.c: the deterministic client of bench/counts.sh. It sends a fixed number of
 * requests in one of three patterns, one after another, checks every answer is a 200, and exits.
 *
 *   counts PORT ka N   keep-alive: one connection, one request at a time (wrk's request bytes,
 *                      GET / HTTP/1.1 and Host only)
 *   counts PORT pl N   pipelined: one connection, batches of 16 requests in one write (wrk's
 *                      request bytes; the last batch is N % 16 if that is not 0)
 *   counts PORT ab N   a new connection per request with ab's request bytes (HTTP/1.0, Host,
 *                      User-Agent: ApacheBench/2.3, Accept: * / *); the client waits for the
 *                      server's close (EOF) unless the answer says Connection: keep-alive (the
 *                      ceiling never closes), then closes with RST (SO_LINGER 0: no TIME_WAIT)
 *
 * Before the first request it retries connect() for up to 60 s (a server under valgrind starts
 * slowly); a refused connect reaches no server code, so the count of requests a server sees is
 * exactly N (plus nothing). Every read waits at most 20 s. Prints one line
 * "counts mode=M n=N ok=K" and exits 0 when K == N. Answers are framed by Content-Length (every
 * peer sends one). */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { BATCH = 16 };
static struct sockaddr_in addr;
static char buf[1 << 16];
static size_t have; /* bytes in buf not yet consumed */

static int dial(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct linger lg = {1, 0};
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    return fd;
}

/* Reads more bytes into buf: > 0, 0 on EOF, -1 on error or after 20 s without data. */
static ssize_t fill(int fd) {
    struct pollfd p = {fd, POLLIN, 0};
    ssize_t r;
    if (have == sizeof buf) return -1;
    if (poll(&p, 1, 20000) != 1) return -1;
    do r = read(fd, buf + have, sizeof buf - have);
    while (r < 0 && errno == EINTR);
    if (r > 0) have += (size_t)r;
    return r;
}

/* Reads one whole answer: 1 if it is a 200 (keepalive set if it says Connection: keep-alive),
 * 0 if it is another status, -1 on EOF or error before its end. */
static int answer(int fd, int *keepalive) {
    char *end, *p;
    size_t head, clen = 0;
    int ok;
    while (!(end = memmem(buf, have, "\r\n\r\n", 4)))
        if (fill(fd) <= 0) return -1;
    head = (size_t)(end - buf) + 4;
    ok = have >= 12 && memcmp(buf + 8, " 200", 4) == 0;
    *keepalive = 0;
    for (p = memchr(buf, '\n', head); p && p + 1 < buf + head; p = memchr(p + 1, '\n', (size_t)(buf + head - p - 1))) {
        if (strncasecmp(p + 1, "content-length:", 15) == 0) clen = strtoul(p + 16, NULL, 10);
        if (strncasecmp(p + 1, "connection:", 11) == 0) {
            char *v = p + 12;
            while (*v == ' ') v++;
            if (strncasecmp(v, "keep-alive", 10) == 0) *keepalive = 1;
        }
    }
    while (have < head + clen)
        if (fill(fd) <= 0) return -1;
    memmove(buf, buf + head + clen, have - head - clen);
    have -= head + clen;
    return ok;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv) {
    char req[256], batch[BATCH * 256];
    const char *mode;
    long n, i, ok = 0;
    int fd = -1, ka, port, r;
    size_t rlen;
    struct timespec ts = {0, 50 * 1000 * 1000};
    if (argc != 4 || (port = atoi(argv[1])) <= 0 || (n = atol(argv[3])) <= 0 ||
        (strcmp(argv[2], "ka") && strcmp(argv[2], "pl") && strcmp(argv[2], "ab"))) {
        fprintf(stderr, "usage: counts PORT ka|pl|ab N\n");
        return 2;
    }
    mode = argv[2];
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (strcmp(mode, "ab") == 0)
        rlen = (size_t)snprintf(req, sizeof req,
                                "GET / HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n", port);
    else
        rlen = (size_t)snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port);
    for (i = 0; i < BATCH; i++) memcpy(batch + (size_t)i * rlen, req, rlen);
    for (i = 0; i < 1200 && (fd = dial()) < 0; i++) nanosleep(&ts, NULL); /* up to 60 s */
    if (fd < 0) {
        fprintf(stderr, "counts: cannot connect to 127.0.0.1:%d\n", port);
        return 1;
    }
    if (strcmp(mode, "ka") == 0) {
        for (i = 0; i < n; i++) {
            if (send_all(fd, req, rlen) || (r = answer(fd, &ka)) < 0) break;
            ok += r;
        }
    } else if (strcmp(mode, "pl") == 0) {
        for (i = 0; i < n; i += BATCH) {
            long k, m = n - i < BATCH ? n - i : BATCH;
            if (send_all(fd, batch, (size_t)m * rlen)) break;
            for (k = 0; k < m && (r = answer(fd, &ka)) >= 0; k++) ok += r;
            if (k < m) break;
        }
    } else {
        for (i = 0; i < n; i++) {
            if (i > 0 && (fd = dial()) < 0) break;
            have = 0;
            if (send_all(fd, req, rlen) || (r = answer(fd, &ka)) < 0) break;
            ok += r;
            if (!ka) /* the server closes: wait for its FIN, so it never sees our RST first */
                while (fill(fd) > 0) have = 0;
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0) close(fd);
    printf("counts mode=%s n=%ld ok=%ld\n", mode, n, ok);
    return ok == n ? 0 : 1;
}
