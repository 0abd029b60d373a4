/* idle: memory per idle keep-alive connection (bench workload 4).
 *   idle PORT RSS_PID [N]      (N: 5000 by default)
 * Reads the VmRSS of RSS_PID (the server process that holds the connections), then opens N
 * keep-alive connections one after another - connect, one GET /, read the whole response - so
 * that what stays behind is the per-connection state and not a burst's transient buffers; idles
 * 0.5 s and reads VmRSS again: (after - before) / (connections idle) is the user-space memory per idle connection.
 * Then it sends one more request on every connection at once and checks that each is answered
 * with a 2xx. Raises RLIMIT_NOFILE to the hard limit. Every phase has a deadline.
 * Prints one line of key=value pairs; exits 0 only if every request was answered with 2xx. */
#include "hclient.h"

static int ep;
static char req[128], rbuf[65536];
static size_t reqlen;
static long bad_status;

/* Runs the loop until `left` connections have finished their outstanding request or the
 * deadline passes; returns how many were answered with a 2xx. */
static long pump(long *left, double deadline) {
    struct epoll_event evs[512];
    long ok = 0;
    while (*left > 0 && hc_now() < deadline) {
        int n = epoll_wait(ep, evs, 512, 50), i;
        for (i = 0; i < n; i++) {
            hc_conn *c = (hc_conn *)evs[i].data.ptr;
            ssize_t r;
            int done;
            if (c->state == HC_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err || hc_send(c, req, reqlen) || hc_ep_set(ep, EPOLL_CTL_MOD, c, EPOLLIN)) goto dead;
                c->state = HC_WAIT;
                continue;
            }
            r = read(c->fd, rbuf, sizeof rbuf);
            if (r < 0 && errno == EAGAIN) continue;
            if (r <= 0 || c->state != HC_WAIT) goto dead; /* closed, or bytes nobody asked for */
            if ((done = hc_feed(c, rbuf, (size_t)r)) == 0) continue;
            if (done < 0) goto dead;
            c->state = HC_IDLE;
            (*left)--;
            if (c->status >= 200 && c->status < 300) ok++;
            else bad_status++;
            continue;
        dead:
            if (c->state == HC_WAIT || c->state == HC_CONNECTING) (*left)--;
            c->state = HC_DEAD;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
        }
    }
    return ok;
}

int main(int argc, char **argv) {
    int port, pid;
    long n, lim, i, left, ok1 = 0, ok2 = 0, idle_before, dead_idle, rss0, rss1, rss2;
    hc_conn *cs;
    double t0;
    if (argc < 3) {
        fprintf(stderr, "usage: idle PORT RSS_PID [N]\n");
        return 2;
    }
    port = atoi(argv[1]);
    pid = atoi(argv[2]);
    n = argc > 3 ? atol(argv[3]) : 5000;
    lim = hc_raise_nofile();
    if (lim > 0 && n > lim - 16) n = lim - 16;
    reqlen = (size_t)snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port);
    cs = (hc_conn *)calloc((size_t)n, sizeof *cs);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!cs || ep < 0) return 2;

    rss0 = hc_rss_kb(pid);
    t0 = hc_now();
    for (i = 0; i < n && hc_now() < t0 + 60; i++) { /* one at a time */
        hc_conn *c = &cs[i];
        left = 1;
        if ((c->fd = hc_connect(port)) < 0) {
            c->state = HC_DEAD;
            continue;
        }
        c->state = HC_CONNECTING;
        hc_ep_set(ep, EPOLL_CTL_ADD, c, EPOLLOUT);
        ok1 += pump(&left, hc_now() + 5);
        if (left) { /* no answer in 5 s: give it up */
            c->state = HC_DEAD;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
        }
    }
    /* idle for half a second; a connection the server closes meanwhile counts as lost */
    for (idle_before = 0, i = 0; i < n; i++) idle_before += cs[i].state == HC_IDLE;
    {
        double until = hc_now() + 0.5;
        struct epoll_event evs[64];
        while (hc_now() < until) {
            int k = epoll_wait(ep, evs, 64, 100), j;
            for (j = 0; j < k; j++) {
                hc_conn *c = (hc_conn *)evs[j].data.ptr;
                c->state = HC_DEAD;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
            }
        }
    }
    for (dead_idle = idle_before, i = 0; i < n; i++) dead_idle -= cs[i].state == HC_IDLE;
    rss1 = hc_rss_kb(pid);

    /* one more request on every idle connection, all at once */
    for (left = 0, i = 0; i < n; i++) {
        hc_conn *c = &cs[i];
        if (c->state != HC_IDLE) continue;
        if (hc_send(c, req, reqlen)) {
            c->state = HC_DEAD;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            continue;
        }
        c->state = HC_WAIT;
        left++;
    }
    ok2 = pump(&left, hc_now() + 20);
    rss2 = hc_rss_kb(pid);
    printf("idle conns=%ld answered=%ld lost_while_idle=%ld again=%ld non2xx=%ld nofile=%ld "
           "rss_before_kb=%ld rss_idle_kb=%ld rss_after_burst_kb=%ld bytes_per_conn=%.0f\n",
           n, ok1, dead_idle, ok2, bad_status, lim, rss0, rss1, rss2,
           idle_before - dead_idle > 0 ? (double)(rss1 - rss0) * 1024.0 / (double)(idle_before - dead_idle) : -1.0);
    for (i = 0; i < n; i++)
        if (cs[i].state != HC_DEAD && cs[i].state != HC_FREE) close(cs[i].fd);
    return (ok1 == n && ok2 == n) ? 0 : 1;
}
