/* many: 10,000 mostly idle keep-alive connections, each sending one request a second
 * (bench workload 5).
 *   many PORT CPU_PIDS [N] [SECONDS]    (N: 10000, SECONDS: 5; CPU_PIDS: "pid[,pid...]")
 * Opens N connections (at most 64 opening at a time; each is checked with one GET /), then for
 * SECONDS seconds connection i sends GET / at t0 + i/N s + k s (k = 0, 1, ...): N requests a
 * second, spread evenly. Latency runs from the write to the last byte of the response; a request
 * that falls due while the previous one on its connection is still unanswered is sent as soon as
 * that answer arrives and its latency counts from when it was due (no coordinated omission); one
 * that falls due a second late on top of that is counted as skipped. Server CPU (utime+stime of
 * CPU_PIDS from /proc) is read at the start and the end of the SECONDS window. N is capped by
 * RLIMIT_NOFILE (raised to the hard limit). Prints one line of key=value pairs; exits 0 only if
 * every connection opened and every request was answered with 2xx in time. */
#include "hclient.h"

static int ep;
static char req[128], rbuf[65536];
static size_t reqlen;
static hc_conn *cs;
static float *lat; /* ms */
static long nlat, maxlat, ramp_non2xx, sent, non2xx, errors, outstanding, opening, deferred, skipped;

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static void kill_conn(hc_conn *c) {
    if (c->state == HC_WAIT || c->state == HC_CONNECTING) outstanding--;
    c->state = HC_DEAD;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

static void send_req(hc_conn *c, double from) {
    if (hc_send(c, req, reqlen)) {
        errors++;
        c->state = HC_WAIT;
        outstanding++;
        kill_conn(c);
        return;
    }
    c->state = HC_WAIT;
    c->t_start = from;
    outstanding++;
    sent++;
}

/* One epoll_wait of at most timeout_ms and its events. measure: record latencies. */
static void turn(int timeout_ms, int measure, int resend) {
    struct epoll_event evs[512];
    int n = epoll_wait(ep, evs, 512, timeout_ms), i;
    for (i = 0; i < n; i++) {
        hc_conn *c = (hc_conn *)evs[i].data.ptr;
        ssize_t r;
        int done;
        if (c->state == HC_DEAD) continue;
        if (c->state == HC_CONNECTING) {
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err || hc_send(c, req, reqlen) || hc_ep_set(ep, EPOLL_CTL_MOD, c, EPOLLIN)) {
                errors++;
                opening--;
                kill_conn(c);
                continue;
            }
            c->state = HC_WAIT; /* still counted in `outstanding` */
            continue;
        }
        r = read(c->fd, rbuf, sizeof rbuf);
        if (r < 0 && errno == EAGAIN) continue;
        if (r <= 0 || c->state != HC_WAIT || (done = hc_feed(c, rbuf, (size_t)r)) < 0) {
            errors++;
            if (!measure && c->t_start == 0) opening--;
            kill_conn(c);
            continue;
        }
        if (!done) continue;
        outstanding--;
        c->state = HC_IDLE;
        if (c->status < 200 || c->status >= 300) non2xx++;
        if (!measure && c->t_start == 0) { /* the ramp's check request */
            opening--;
            c->t_start = -1;
            if (c->status < 200 || c->status >= 300) kill_conn(c); /* e.g. a 503: not connected */
        } else if (measure && nlat < maxlat) {
            lat[nlat++] = (float)((hc_now() - c->t_start) * 1000.0);
        }
        if (c->t_due > 0 && resend) {
            send_req(c, c->t_due);
            c->t_due = 0;
        }
    }
}

int main(int argc, char **argv) {
    int port;
    long n, lim, i, connected = 0, j = 0, jmax;
    double secs, t0, tend, period, deadline;
    long cpu0, cpu1, tck = sysconf(_SC_CLK_TCK);
    const char *pids;
    if (argc < 3) {
        fprintf(stderr, "usage: many PORT CPU_PIDS [N] [SECONDS]\n");
        return 2;
    }
    port = atoi(argv[1]);
    pids = argv[2];
    n = argc > 3 ? atol(argv[3]) : 10000;
    secs = argc > 4 ? atof(argv[4]) : 5.0;
    lim = hc_raise_nofile();
    if (lim > 0 && n > lim - 32) n = lim - 32;
    reqlen = (size_t)snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port);
    cs = (hc_conn *)calloc((size_t)n, sizeof *cs);
    maxlat = (long)((double)n * (secs + 2));
    lat = (float *)malloc((size_t)maxlat * sizeof *lat);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!cs || !lat || ep < 0) return 2;

    /* ramp: at most 64 connections opening (connect + first request) at a time */
    deadline = hc_now() + 30;
    for (i = 0; (i < n || outstanding > 0) && hc_now() < deadline;) {
        while (i < n && opening < 64) {
            hc_conn *c = &cs[i++];
            if ((c->fd = hc_connect(port)) < 0) {
                c->state = HC_DEAD;
                errors++;
                continue;
            }
            c->state = HC_CONNECTING;
            hc_ep_set(ep, EPOLL_CTL_ADD, c, EPOLLOUT);
            opening++;
            outstanding++;
        }
        turn(10, 0, 0);
    }
    for (i = 0; i < n; i++) {
        if (cs[i].state == HC_IDLE) connected++;
        else if (cs[i].state != HC_DEAD && cs[i].state != HC_FREE) kill_conn(&cs[i]);
        cs[i].t_start = 0;
    }
    ramp_non2xx = non2xx; /* the ramp's answers are checks, not samples */
    non2xx = 0;

    /* the window: N requests a second, evenly spread */
    period = 1.0 / (double)n;
    jmax = (long)(secs * (double)n);
    t0 = hc_now() + 0.01;
    tend = t0 + secs;
    cpu0 = hc_cpu_ticks(pids);
    while (j < jmax) {
        double now = hc_now(), due;
        while (j < jmax && (due = t0 + (double)j * period) <= now) {
            hc_conn *c = &cs[j % n];
            if (c->state == HC_IDLE) send_req(c, now);
            else if (c->state == HC_WAIT) {
                if (c->t_due == 0) {
                    c->t_due = due;
                    deferred++;
                } else {
                    skipped++;
                }
            }
            j++;
        }
        if (j < jmax) {
            double wait = (t0 + (double)j * period - hc_now()) * 1000.0;
            turn(wait <= 0 ? 0 : wait < 1 ? 1 : (int)wait + 1, 1, 1);
        }
    }
    while (hc_now() < tend) turn((int)((tend - hc_now()) * 1000.0) + 1, 1, 1);
    cpu1 = hc_cpu_ticks(pids);
    /* drain what is outstanding (deferred requests are not sent any more), at most 1 s */
    deadline = hc_now() + 1;
    while (outstanding > 0 && hc_now() < deadline) turn(10, 1, 0);
    for (i = 0; i < n; i++)
        if (cs[i].t_due > 0) skipped++; /* due, never sent */

    qsort(lat, (size_t)nlat, sizeof *lat, cmpf);
    printf("many conns=%ld connected=%ld nofile=%ld ramp_non2xx=%ld secs=%.1f sent=%ld answered=%ld non2xx=%ld errors=%ld "
           "late=%ld skipped=%ld unanswered=%ld p50_ms=%.3f p99_ms=%.3f max_ms=%.3f cpu_s=%.2f "
           "cpu_us_per_req=%.2f\n",
           n, connected, lim, ramp_non2xx, secs, sent, nlat, non2xx, errors, deferred, skipped, outstanding,
           nlat ? lat[nlat / 2] : -1.0, nlat ? lat[(long)((double)nlat * 0.99)] : -1.0,
           nlat ? lat[nlat - 1] : -1.0, cpu0 >= 0 && cpu1 >= 0 ? (double)(cpu1 - cpu0) / (double)tck : -1.0,
           cpu0 >= 0 && cpu1 >= 0 && nlat ? (double)(cpu1 - cpu0) / (double)tck * 1e6 / (double)nlat : -1.0);
    for (i = 0; i < n; i++)
        if (cs[i].state != HC_DEAD && cs[i].state != HC_FREE) close(cs[i].fd);
    return (connected == n && non2xx == 0 && errors == 0 && outstanding == 0 && skipped == 0) ? 0 : 1;
}
