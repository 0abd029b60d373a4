/* hclient.h: the small HTTP/1.1 client side shared by bench/idle.c and bench/many.c.
 * Non-blocking sockets on epoll, one request outstanding per connection, responses framed by
 * Content-Length (every peer sends one for GET /), plus /proc readers for the server side. */
#ifndef HCLIENT_H
#define HCLIENT_H
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#if defined(__GNUC__)
#define HC_FN static __attribute__((unused))
#else
#define HC_FN static
#endif

enum { HC_FREE, HC_CONNECTING, HC_WAIT, HC_IDLE, HC_DEAD };
enum { HC_HEAD_MAX = 1024 };

typedef struct hc_conn {
    int fd, state, status;
    unsigned hlen;          /* head bytes collected so far */
    long body_left;         /* -1 while the head is incomplete */
    double t_start;         /* when the outstanding request counts from */
    double t_due;           /* many.c: a request that is due while one is outstanding (0: none) */
    char head[HC_HEAD_MAX];
} hc_conn;

HC_FN double hc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Raises RLIMIT_NOFILE to the hard limit; returns the soft limit now in force. */
HC_FN long hc_raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return -1;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

/* A non-blocking connect to 127.0.0.1:port. Closing it later sends RST (SO_LINGER 0), so that
 * tens of thousands of client connections per run leave no TIME_WAIT behind. -1 on error. */
HC_FN int hc_connect(int port) {
    struct sockaddr_in a;
    struct linger lg = {1, 0};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

HC_FN int hc_ep_set(int ep, int op, hc_conn *c, unsigned events) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.ptr = c;
    return epoll_ctl(ep, op, c->fd, &ev);
}

/* Writes the whole request (a few dozen bytes: a short write is an error). 0 or -1. */
HC_FN int hc_send(hc_conn *c, const char *req, size_t len) {
    if (write(c->fd, req, len) != (ssize_t)len) return -1;
    c->hlen = 0;
    c->body_left = -1;
    c->status = 0;
    return 0;
}

/* Feeds bytes read from the connection: 1 when the response is complete (c->status set),
 * 0 when more are needed, -1 on a malformed response or bytes beyond it. */
HC_FN int hc_feed(hc_conn *c, const char *p, size_t n) {
    if (c->body_left < 0) {
        char *end, *cl;
        size_t take = n < HC_HEAD_MAX - 1 - c->hlen ? n : HC_HEAD_MAX - 1 - c->hlen;
        memcpy(c->head + c->hlen, p, take);
        c->hlen += (unsigned)take;
        c->head[c->hlen] = 0;
        if (!(end = strstr(c->head, "\r\n\r\n"))) return c->hlen >= HC_HEAD_MAX - 1 ? -1 : 0;
        *end = 0;
        if (strncmp(c->head, "HTTP/1.", 7) || strlen(c->head) < 12) return -1;
        c->status = atoi(c->head + 9);
        for (cl = c->head; (cl = strchr(cl, '\n')) != NULL; cl++)
            if (!strncasecmp(cl + 1, "content-length:", 15)) break;
        if (!cl) return -1;
        c->body_left = atol(cl + 16);
        /* what followed the head, in this read */
        {
            size_t head_bytes = (size_t)(end + 4 - c->head), before = c->hlen - take;
            size_t rest = n - (head_bytes - before);
            p += head_bytes - before;
            n = rest;
        }
    }
    if ((long)n > c->body_left) return -1;
    c->body_left -= (long)n;
    return c->body_left == 0 ? 1 : 0;
}

/* utime+stime (clock ticks) summed over the comma-separated pids; -1 if one is unreadable. */
HC_FN long hc_cpu_ticks(const char *pids) {
    long total = 0;
    const char *p = pids;
    while (p && *p) {
        char path[64], buf[1024], *q;
        long ut = 0, st = 0;
        int i;
        FILE *f;
        snprintf(path, sizeof path, "/proc/%d/stat", atoi(p));
        if (!(f = fopen(path, "r"))) return -1;
        if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
        fclose(f);
        if (!(q = strrchr(buf, ')'))) return -1;
        for (i = 2; i < 14 && q; i++) q = strchr(q + 1, ' '); /* field 14 is utime */
        if (!q || sscanf(q + 1, "%ld %ld", &ut, &st) != 2) return -1;
        total += ut + st;
        p = strchr(p, ',');
        if (p) p++;
    }
    return total;
}

/* VmRSS of pid in KiB, -1 if unreadable. */
HC_FN long hc_rss_kb(int pid) {
    char path[64], line[256];
    long kb = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    if (!(f = fopen(path, "r"))) return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    fclose(f);
    return kb;
}

#endif
