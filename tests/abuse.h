/* abuse.h: what tests/abuse.c and tests/soak.c share. Child processes
 * (examples/httpbin, examples/fetch, fake upstreams), measurements of a
 * process from /proc (RSS, peak RSS, open fds, CPU time), blocking loopback
 * sockets with deadlines, and an incremental HTTP/1.1 response parser.
 * Everything here talks to 127.0.0.1 only. Include after tn_test.h. */
#ifndef TN_ABUSE_H
#define TN_ABUSE_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define AB_FN static __attribute__((unused))

#define KiB 1024L
#define MiB (1024L * 1024L)

/* ---------------------------------------------------------------------
 * THE DOCUMENTED LIMITS (tornado.h's manual, LIMITS AND SECURITY and COST
 * OF EACH OPERATION; the configuration block). Every bound in the suites
 * is built from these, never from a measurement of the code under test.
 * ------------------------------------------------------------------- */
#define L_BUF_SIZE (16 * KiB)     /* TN_BUF_SIZE: a connection's input buffer while it reads */
#define L_WRITE_HIGH (256 * KiB)  /* TN_HTTP_WRITE_HIGH: a response's unsent body copies */
#define L_WRITE_LOW (64 * KiB)    /* TN_HTTP_WRITE_LOW: tn_http_drain resolves below this */
#define L_MAX_HEAD (64 * KiB)     /* max_head_bytes (431); also the client's head limit */
#define L_MAX_TARGET (8 * KiB)    /* max_target_bytes (414) */
#define L_MAX_BODY (1 * MiB)      /* max_body_bytes (413) */
#define L_CONN_OBJ 112L           /* the connection: 96 bytes, a 112-byte malloc chunk */
#define L_SIO 160L                /* an active connection's stream I/O state (144; 160 in a TLS build) */
#define L_REQ_OBJ (4 * KiB)       /* a request object: 4 KiB */
#define L_SCRATCH (3 * L_MAX_TARGET + 64) /* decoded strings: 3 x target + 64 */
#define L_BUF_POOL 64L            /* TN_BUF_POOL: free buffers a loop keeps */
#define L_REQ_POOL 64L            /* TN_HTTP_REQ_POOL: free request objects a server keeps */
#define L_SHED(maxc) (64 + (maxc) / 8) /* 503-and-linger connections at a time past max_connections */
#define L_CLIENT_MAX_BODY (100 * MiB) /* the HTTP client's max_body_bytes when buffering */
#define L_CLIENT_TIMEOUT_MS 20000L    /* the HTTP client's request_timeout */
#define L_SHUTDOWN_MS 5000L           /* httpbin's graceful-shutdown deadline */
#define L_ACCEPT_PAUSE_MS 100L        /* accepting pauses this long at EMFILE */
/* A TLS handshake in progress: the library's state, ~46 KiB with OpenSSL
 * 3.0 (the manual's COST table), taken as 64 KiB. */
#define L_TLS_HANDSHAKE (64 * KiB)

/* A connection reading a request: the connection, its I/O state, its
 * request object, the scratch, and its input buffer. No output beyond a
 * small answer. */
#define L_CONN_READING (L_CONN_OBJ + L_SIO + L_REQ_OBJ + L_SCRATCH + L_BUF_SIZE)
/* The worst case of one connection in user space (the manual): connection
 * + request + scratch + 16 KiB input + 256 KiB of output copies + a head. */
#define L_CONN_WORST (L_CONN_READING + L_WRITE_HIGH + L_MAX_HEAD)
/* What a warm server may hold without any connection: the free lists (64
 * buffers of 16 KiB = 1 MiB, 64 request objects = 256 KiB). */
#define L_POOLS (L_BUF_POOL * L_BUF_SIZE + L_REQ_POOL * L_REQ_OBJ)
/* Allocator and page granularity: malloc arenas, fragmentation, 4 KiB
 * pages touched by the libc. Not a tornado.h limit: a fixed allowance. */
#define L_SLACK (1 * MiB)

/* CHECK that a <= b, and print both (the measurements for the report). */
#define CHECK_LE(a, b)                                                                   \
    do {                                                                                 \
        long long a_ = (long long)(a), b_ = (long long)(b);                              \
        printf("    measured %-34s %12lld  <= bound %lld\n", #a, a_, b_);                \
        tn_test_checks++;                                                                \
        if (!(a_ <= b_)) {                                                               \
            fprintf(stderr, "    %s = %lld exceeds %s = %lld\n", #a, a_, #b, b_);        \
            tn_test_fail(__FILE__, __LINE__, #a " <= " #b);                              \
        }                                                                                \
    } while (0)

AB_FN long ab_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

AB_FN void ab_sleep_ms(long ms) {
    struct timespec ts;
    if (ms <= 0) return;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------ /proc */
/* A "Key:   123 kB" line of /proc/PID/status, in KiB; -1 if absent. */
AB_FN long ab_status_kb(pid_t pid, const char *key) {
    char path[64], line[256];
    size_t kl = strlen(key);
    long v = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r"))) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = atol(line + kl + 1);
            break;
        }
    fclose(f);
    return v;
}
AB_FN long ab_rss_kb(pid_t pid) { return ab_status_kb(pid, "VmRSS"); }
AB_FN long ab_hwm_kb(pid_t pid) { return ab_status_kb(pid, "VmHWM"); }

/* Resets VmHWM to the current RSS (Linux >= 4.0, clear_refs 5), so that
 * VmHWM afterwards is the peak of what follows. 0 or -1. */
AB_FN int ab_reset_hwm(pid_t pid) {
    char path[64];
    int fd, ok;
    snprintf(path, sizeof path, "/proc/%d/clear_refs", (int)pid);
    if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0) return -1;
    ok = write(fd, "5", 1) == 1;
    close(fd);
    return ok ? 0 : -1;
}

/* Open fds of a process (entries of /proc/PID/fd); -1 if it is gone. */
AB_FN int ab_fds(pid_t pid) {
    char path[64];
    struct dirent *e;
    int n = 0;
    DIR *d;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    if (!(d = opendir(path))) return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* utime + stime of a process, in ms (resolution: one clock tick). */
AB_FN long ab_cpu_ms(pid_t pid) {
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    long tck = sysconf(_SC_CLK_TCK);
    FILE *f;
    size_t n;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (!(f = fopen(path, "r"))) return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    if (!(p = strrchr(buf, ')'))) return -1;
    /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
    return (long)((ut + st) * 1000 / (unsigned long)(tck > 0 ? tck : 100));
}

/* Polls until the process's fd count is at most want or timeout_ms passed;
 * returns the last count (and *took_ms, if given, the time it took). */
AB_FN int ab_wait_fds(pid_t pid, int want, long timeout_ms, long *took_ms) {
    long t0 = ab_now_ms();
    int n;
    for (;;) {
        n = ab_fds(pid);
        if (n <= want || ab_now_ms() - t0 >= timeout_ms) break;
        ab_sleep_ms(10);
    }
    if (took_ms) *took_ms = ab_now_ms() - t0;
    return n;
}

/* The TCP state ("st" of /proc/net/tcp: 1 ESTABLISHED, 4 FIN_WAIT1, 7
 * CLOSE...) of the IPv4 socket local_port -> remote_port, or 0 if there is
 * none. Tells when a server closed its end of a connection even while
 * unsent data (which the peer cannot see past) is still queued. */
AB_FN int ab_tcp_state(int local_port, int remote_port) {
    char line[512];
    int st = 0;
    FILE *f = fopen("/proc/net/tcp", "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long la, ra;
        unsigned lp, rp, s;
        if (sscanf(line, " %*d: %lx:%x %lx:%x %x", &la, &lp, &ra, &rp, &s) == 5 && (int)lp == local_port &&
            (int)rp == remote_port) {
            st = (int)s;
            break;
        }
    }
    fclose(f);
    return st;
}

/* The local port of a connected socket. */
AB_FN int ab_local_port(int fd) {
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &al) < 0) return -1;
    return ntohs(a.sin_port);
}

/* ---------------------------------------------------------- children */
/* Starts argv (argv[0] a path) with stdin from /dev/null, stdout to a pipe
 * whose read end goes to *out_fd (NULL: /dev/null), stderr to err_fd (-1:
 * /dev/null). nofile > 0 sets RLIMIT_NOFILE in the child before exec. Every
 * other fd is closed; the child is killed if the test process dies. */
AB_FN pid_t ab_spawn(char *const argv[], int *out_fd, int err_fd, long nofile) {
    int p[2] = {-1, -1};
    pid_t pid;
    if (out_fd && pipe(p) < 0) return -1;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR), fd;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(null, 0);
        dup2(out_fd ? p[1] : null, 1);
        dup2(err_fd >= 0 ? err_fd : null, 2);
        for (fd = 3; fd < 4096; fd++) close(fd);
        if (nofile > 0) {
            struct rlimit rl;
            rl.rlim_cur = rl.rlim_max = (rlim_t)nofile;
            if (setrlimit(RLIMIT_NOFILE, &rl) < 0) _exit(126);
        }
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], argv);
        _exit(127);
    }
    if (out_fd) {
        close(p[1]);
        if (pid < 0) close(p[0]);
        else *out_fd = p[0];
    }
    return pid;
}

/* waitpid with a deadline: the exit status (128 + signal if killed), -2 on
 * timeout (the child is still running), -1 on error. */
AB_FN int ab_wait(pid_t pid, long timeout_ms, struct rusage *ru) {
    long t0 = ab_now_ms();
    int status;
    for (;;) {
        pid_t r = wait4(pid, &status, WNOHANG, ru);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (r < 0 && errno != EINTR) return -1;
        if (ab_now_ms() - t0 >= timeout_ms) return -2;
        ab_sleep_ms(5);
    }
}

/* Kills and reaps a child (or its process group if group). */
AB_FN void ab_kill(pid_t pid, int group) {
    if (pid <= 0) return;
    kill(group ? -pid : pid, SIGKILL);
    kill(pid, SIGKILL);
    ab_wait(pid, 5000, NULL);
}

/* The path of an example program: examples/NAME, or $ABUSE_EXAMPLES/NAME
 * (to run the suites against other builds, e.g. a planted bug). */
AB_FN char *ab_example(const char *name) {
    static char paths[4][256];
    static int next;
    const char *dir = getenv("ABUSE_EXAMPLES");
    char *p = paths[next++ % 4];
    snprintf(p, sizeof paths[0], "%s/%s", dir && *dir ? dir : "examples", name);
    return p;
}

struct ab_srv {
    pid_t pid;
    int port;
    int fds0;    /* open fds once started and warm */
    long rss0;   /* VmRSS (KiB) once started and warm */
};

AB_FN int ab_connect(int port, int rcvbuf);
AB_FN int ab_get_ok(int port);

/* Starts examples/httpbin --port 0 FLAGS (space-separated), reads its
 * "listening on http://127.0.0.1:PORT" line, warms it up with a few
 * requests and records its fds and RSS. 0, or -1 (then nothing runs). */
AB_FN int ab_httpbin(struct ab_srv *s, const char *flags, long nofile) {
    char *argv[40], copy[512], line[256], *tok, *save = NULL;
    int n = 0, out = -1, i;
    size_t len = 0;
    long t0 = ab_now_ms();
    memset(s, 0, sizeof *s);
    argv[n++] = ab_example("httpbin");
    argv[n++] = (char *)"--port";
    argv[n++] = (char *)"0";
    snprintf(copy, sizeof copy, "%s", flags ? flags : "");
    for (tok = strtok_r(copy, " ", &save); tok && n < 38; tok = strtok_r(NULL, " ", &save)) argv[n++] = tok;
    argv[n] = NULL;
    if ((s->pid = ab_spawn(argv, &out, -1, nofile)) <= 0) return -1;
    while (len < sizeof line - 1 && !memchr(line, '\n', len) && ab_now_ms() - t0 < 5000) {
        struct pollfd pf;
        ssize_t r;
        pf.fd = out;
        pf.events = POLLIN;
        if (poll(&pf, 1, 100) <= 0) continue;
        if ((r = read(out, line + len, sizeof line - 1 - len)) <= 0) break;
        len += (size_t)r;
    }
    line[len] = 0;
    close(out);
    if (sscanf(line, "listening on http://127.0.0.1:%d", &s->port) != 1 || s->port <= 0) {
        ab_kill(s->pid, 0);
        s->pid = 0;
        return -1;
    }
    for (i = 0; i < 3; i++) ab_get_ok(s->port); /* warm: first buffers, pools, Date */
    ab_sleep_ms(50);
    s->fds0 = ab_fds(s->pid);
    s->rss0 = ab_rss_kb(s->pid);
    return 0;
}

/* SIGTERM, then the exit status within timeout_ms (-2: still running: it
 * is then killed). */
AB_FN int ab_httpbin_stop(struct ab_srv *s, long timeout_ms) {
    int rc;
    if (s->pid <= 0) return -1;
    kill(s->pid, SIGTERM);
    rc = ab_wait(s->pid, timeout_ms, NULL);
    if (rc == -2) ab_kill(s->pid, 0);
    s->pid = 0;
    return rc;
}

/* ----------------------------------------------------------- sockets */
/* A blocking TCP connection to 127.0.0.1:port (rcvbuf > 0: SO_RCVBUF set
 * before connecting, so the kernel window stays small); -1 on failure. */
AB_FN int ab_connect(int port, int rcvbuf) {
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends all of p within timeout_ms. 0, or -1 (error, reset, timeout). */
AB_FN int ab_send_to(int fd, const void *p, size_t n, long timeout_ms) {
    const char *s = (const char *)p;
    long t0 = ab_now_ms();
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            s += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pf;
            long left = timeout_ms - (ab_now_ms() - t0);
            if (left <= 0) return -1;
            pf.fd = fd;
            pf.events = POLLOUT;
            poll(&pf, 1, (int)(left > 1000 ? 1000 : left));
            continue;
        }
        return -1;
    }
    return 0;
}
AB_FN int ab_send(int fd, const void *p, size_t n) { return ab_send_to(fd, p, n, 10000); }
AB_FN int ab_sends(int fd, const char *s) { return ab_send(fd, s, strlen(s)); }

/* Closes with a reset (SO_LINGER 0). */
AB_FN void ab_rst(int fd) {
    struct linger lg;
    lg.l_onoff = 1;
    lg.l_linger = 0;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

#define AB_EOF (-1)
#define AB_TIMEOUT (-2)
#define AB_RESET (-3)
#define AB_BAD (-4)

/* One recv within timeout_ms: bytes, 0 at EOF, AB_TIMEOUT, AB_RESET. */
AB_FN long ab_recv(int fd, char *buf, size_t cap, long timeout_ms) {
    struct pollfd pf;
    long t0 = ab_now_ms();
    for (;;) {
        ssize_t r;
        long left = timeout_ms - (ab_now_ms() - t0);
        int pr;
        pf.fd = fd;
        pf.events = POLLIN;
        pr = poll(&pf, 1, (int)(left < 0 ? 0 : left));
        if (pr < 0 && errno == EINTR) continue;
        if (pr == 0) return AB_TIMEOUT;
        r = recv(fd, buf, cap, MSG_DONTWAIT);
        if (r >= 0) return (long)r;
        if (errno == EINTR || errno == EAGAIN) continue;
        return AB_RESET;
    }
}

/* Reads and drops until EOF or a reset, at most timeout_ms: returns how it
 * ended (0 EOF, AB_RESET, AB_TIMEOUT); *bytes gets what was read. */
AB_FN int ab_drain_until_closed(int fd, long timeout_ms, long long *bytes) {
    static char junk[65536];
    long t0 = ab_now_ms();
    long long total = 0;
    int how;
    for (;;) {
        long left = timeout_ms - (ab_now_ms() - t0), r;
        if (left <= 0) {
            how = AB_TIMEOUT;
            break;
        }
        r = ab_recv(fd, junk, sizeof junk, left);
        if (r > 0) {
            total += r;
            continue;
        }
        how = r == 0 ? 0 : (int)r;
        break;
    }
    if (bytes) *bytes = total;
    return how;
}

/* ---------------------------------------------- HTTP response parser */
enum { HP_HEAD, HP_LEN, HP_CSIZE, HP_CDATA, HP_CCRLF, HP_TRAILER, HP_CLOSE, HP_DONE };

typedef void (*ab_body_fn)(void *arg, const char *p, size_t n);

struct ab_resp {
    int status, interim;
    long long clen; /* -1: no Content-Length */
    int chunked, conn_close;
    long long body_len; /* decoded body bytes */
    char body[4096];    /* the body's first bytes, NUL-terminated */
    size_t kept;
    ab_body_fn on_body;
    void *arg;
    /* parser state */
    int st;
    char head[8192];
    size_t hlen;
    long long left;
    char line[512];
    size_t llen;
};

AB_FN void ab_resp_init(struct ab_resp *r, ab_body_fn fn, void *arg) {
    r->status = r->interim = 0;
    r->clen = -1;
    r->chunked = r->conn_close = 0;
    r->body_len = 0;
    r->body[0] = 0;
    r->kept = 0;
    r->on_body = fn;
    r->arg = arg;
    r->st = HP_HEAD;
    r->hlen = r->llen = 0;
    r->left = 0;
}

/* The value of header name in a head, or NULL (case-insensitive). */
AB_FN const char *ab_header(const char *head, const char *name, char *out, size_t cap) {
    const char *p = strstr(head, "\r\n");
    size_t nl = strlen(name);
    while (p && p[2] && !(p[2] == '\r' && p[3] == '\n')) {
        const char *line = p + 2, *end = strstr(line, "\r\n");
        if (!end) break;
        if ((size_t)(end - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            size_t n;
            while (*v == ' ' || *v == '\t') v++;
            n = (size_t)(end - v);
            if (n >= cap) n = cap - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return out;
        }
        p = end;
    }
    return NULL;
}

AB_FN int ab_head_done(struct ab_resp *r) {
    char v[128];
    int minor;
    if (sscanf(r->head, "HTTP/1.%d %d", &minor, &r->status) != 2) return -1;
    if (r->status >= 100 && r->status < 200) { /* interim: the final one follows */
        r->interim++;
        r->hlen = 0;
        return 0;
    }
    if (ab_header(r->head, "Transfer-Encoding", v, sizeof v) && strstr(v, "chunked")) r->chunked = 1;
    if (ab_header(r->head, "Content-Length", v, sizeof v)) r->clen = atoll(v);
    if (ab_header(r->head, "Connection", v, sizeof v) && strcasecmp(v, "close") == 0) r->conn_close = 1;
    if (r->status == 204 || r->status == 304) r->st = HP_DONE;
    else if (r->chunked) r->st = HP_CSIZE;
    else if (r->clen >= 0) {
        r->left = r->clen;
        r->st = r->clen ? HP_LEN : HP_DONE;
    } else r->st = HP_CLOSE;
    return 0;
}

AB_FN void ab_body(struct ab_resp *r, const char *p, size_t n) {
    size_t k = n < sizeof r->body - 1 - r->kept ? n : sizeof r->body - 1 - r->kept;
    memcpy(r->body + r->kept, p, k);
    r->kept += k;
    r->body[r->kept] = 0;
    r->body_len += (long long)n;
    if (r->on_body) r->on_body(r->arg, p, n);
}

/* Feeds bytes; returns how many it used (it stops at the end of one
 * response: r->st == HP_DONE), or -1 if they are not HTTP. */
AB_FN long ab_feed(struct ab_resp *r, const char *p, size_t n) {
    size_t i = 0;
    while (i < n && r->st != HP_DONE) {
        switch (r->st) {
        case HP_HEAD:
            if (r->hlen == sizeof r->head - 1) return -1;
            r->head[r->hlen++] = p[i++];
            r->head[r->hlen] = 0;
            if (r->hlen >= 4 && memcmp(r->head + r->hlen - 4, "\r\n\r\n", 4) == 0 && ab_head_done(r) < 0)
                return -1;
            if (r->hlen == 5 && memcmp(r->head, "HTTP/", 5) != 0) return -1;
            break;
        case HP_LEN: {
            size_t k = (size_t)((long long)(n - i) < r->left ? (long long)(n - i) : r->left);
            ab_body(r, p + i, k);
            i += k;
            r->left -= (long long)k;
            if (!r->left) r->st = HP_DONE;
            break;
        }
        case HP_CDATA: {
            size_t k = (size_t)((long long)(n - i) < r->left ? (long long)(n - i) : r->left);
            ab_body(r, p + i, k);
            i += k;
            r->left -= (long long)k;
            if (!r->left) {
                r->st = HP_CCRLF;
                r->llen = 0;
            }
            break;
        }
        case HP_CSIZE:
        case HP_CCRLF:
        case HP_TRAILER: {
            char c = p[i++];
            if (r->llen == sizeof r->line - 1) return -1;
            r->line[r->llen++] = c;
            if (c != '\n') break;
            r->line[r->llen] = 0;
            if (r->st == HP_CSIZE) {
                char *end;
                long long size = strtoll(r->line, &end, 16);
                if (end == r->line || size < 0) return -1;
                r->left = size;
                r->st = size ? HP_CDATA : HP_TRAILER;
            } else if (r->st == HP_CCRLF) {
                if (strcmp(r->line, "\r\n") != 0) return -1;
                r->st = HP_CSIZE;
            } else if (strcmp(r->line, "\r\n") == 0) {
                r->st = HP_DONE;
            }
            r->llen = 0;
            break;
        }
        case HP_CLOSE:
            ab_body(r, p + i, n - i);
            i = n;
            break;
        }
    }
    return (long)i;
}

/* A client connection with the bytes read past the last response. */
struct ab_cli {
    int fd;
    size_t off, len;
    char buf[16384];
};

AB_FN void ab_cli_init(struct ab_cli *c, int fd) {
    c->fd = fd;
    c->off = c->len = 0;
}

/* Reads one whole response within timeout_ms: 0, AB_EOF (closed before it
 * was whole), AB_RESET, AB_TIMEOUT or AB_BAD. r is initialised by the
 * caller (ab_resp_init) so that it can set on_body. */
AB_FN int ab_read_resp(struct ab_cli *c, struct ab_resp *r, long timeout_ms) {
    long t0 = ab_now_ms();
    for (;;) {
        long n;
        if (c->off < c->len) {
            long k = ab_feed(r, c->buf + c->off, c->len - c->off);
            if (k < 0) return AB_BAD;
            c->off += (size_t)k;
            if (r->st == HP_DONE) return 0;
            continue;
        }
        n = ab_recv(c->fd, c->buf, sizeof c->buf, timeout_ms - (ab_now_ms() - t0));
        if (n == 0) {
            if (r->st == HP_CLOSE) {
                r->st = HP_DONE;
                return 0;
            }
            return AB_EOF;
        }
        if (n < 0) return (int)n;
        c->off = 0;
        c->len = (size_t)n;
    }
}

/* Parses one response from a buffer collected elsewhere (eof: the bytes
 * end at the connection's end). 0 when whole, else AB_EOF or AB_BAD. */
AB_FN int ab_parse_resp(const char *buf, size_t len, int eof, struct ab_resp *r) {
    long k = ab_feed(r, buf, len);
    if (k < 0) return AB_BAD;
    if (r->st == HP_CLOSE && eof) r->st = HP_DONE;
    return r->st == HP_DONE ? 0 : AB_EOF;
}

#define AB_GET(path) "GET " path " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

/* One GET on a new connection: the status, or a negative AB_* code. */
AB_FN int ab_get_status(int port, const char *path, long timeout_ms, char *body, size_t cap) {
    static struct ab_cli c;
    static struct ab_resp r;
    char req[1024];
    int fd = ab_connect(port, 0), rc;
    if (fd < 0) return AB_RESET;
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    ab_cli_init(&c, fd);
    ab_resp_init(&r, NULL, NULL);
    rc = ab_sends(fd, req) ? AB_RESET : ab_read_resp(&c, &r, timeout_ms);
    close(fd);
    if (body && cap) snprintf(body, cap, "%s", r.body);
    return rc ? rc : r.status;
}

AB_FN int ab_get_ok(int port) { return ab_get_status(port, "/", 5000, NULL, 0) == 200; }

/* ------------------------------------------------- fake upstreams
 * A listener on a free loopback port whose process forks one handler per
 * connection; each handler reads the request head, then misbehaves. The
 * whole group is killed by ab_kill(pid, 1); every process of it dies with
 * the test process too (PR_SET_PDEATHSIG). */
enum {
    UP_OK,        /* a correct small answer: "ok" */
    UP_INTERIM,   /* 100 Continue, forever */
    UP_HEADERS,   /* a status line, then header fields forever */
    UP_BODY_FAST, /* a chunked body forever, as fast as the client takes it */
    UP_BODY_SLOW, /* a close-delimited body forever, 16 KiB every 10 ms */
    UP_DRIP       /* a Content-Length response, one byte every 50 ms */
};

AB_FN void ab_upstream_conn(int fd, int mode) {
    static char big[16384 + 16];
    char head[8192];
    size_t hl = 0;
    long t0 = ab_now_ms(), sent = 0;
    /* the request head */
    while (hl < sizeof head - 1 && ab_now_ms() - t0 < 5000) {
        long r = ab_recv(fd, head + hl, sizeof head - 1 - hl, 5000);
        if (r <= 0) return;
        hl += (size_t)r;
        head[hl] = 0;
        if (strstr(head, "\r\n\r\n")) break;
    }
    switch (mode) {
    case UP_OK:
        ab_sends(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok");
        ab_sleep_ms(100);
        return;
    case UP_INTERIM:
        for (;;) {
            if (ab_sends(fd, "HTTP/1.1 100 Continue\r\n\r\n")) return;
            if (++sent % 64 == 0) ab_sleep_ms(1);
        }
    case UP_HEADERS:
        if (ab_sends(fd, "HTTP/1.1 200 OK\r\n")) return;
        for (;;) {
            if (ab_sends(fd, "X-Endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"))
                return;
            if (++sent % 64 == 0) ab_sleep_ms(1);
        }
    case UP_BODY_FAST:
        memset(big, 'z', sizeof big);
        memcpy(big, "4000\r\n", 6);
        memcpy(big + 6 + 16384, "\r\n", 2);
        if (ab_sends(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")) return;
        for (;;)
            if (ab_send(fd, big, 6 + 16384 + 2)) return;
    case UP_BODY_SLOW:
        memset(big, 'y', sizeof big);
        if (ab_sends(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")) return;
        for (;;) {
            if (ab_send(fd, big, 16384)) return;
            ab_sleep_ms(10);
        }
    case UP_DRIP: {
        static const char h[] = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        size_t i;
        for (i = 0;; i++) {
            if (ab_send(fd, i < sizeof h - 1 ? h + i : "x", 1)) return;
            ab_sleep_ms(50);
        }
    }
    }
}

AB_FN pid_t ab_upstream(int mode, int *port) {
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    pid_t pid;
    if (lfd < 0) return -1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 64) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) < 0) {
        close(lfd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGCHLD, SIG_IGN); /* handlers reap themselves */
        alarm(120);
        for (;;) {
            int fd = accept(lfd, NULL, NULL);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED) continue;
                _exit(1);
            }
            if (fork() == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                close(lfd);
                alarm(60);
                ab_upstream_conn(fd, mode);
                _exit(0);
            }
            close(fd);
        }
    }
    if (pid > 0) setpgid(pid, pid);
    close(lfd);
    return pid;
}

/* ------------------------------------------------------- collectors
 * Many connections read at once: each keeps the first bytes it got, how
 * many in all, and when and how it ended. */
struct ab_coll {
    int fd, closed, how; /* how: 0 EOF, AB_RESET */
    long closed_at;      /* ab_now_ms() */
    long long total;
    size_t len;
    char buf[8192];
};

AB_FN void ab_coll_init(struct ab_coll *c, int fd) {
    c->fd = fd;
    c->closed = fd < 0;
    c->how = 0;
    c->closed_at = 0;
    c->total = 0;
    c->len = 0;
}

/* Waits at most ms for input on the open ones and reads what came. */
AB_FN void ab_coll_poll(struct ab_coll *c, int n, long ms) {
    struct pollfd pf[1024];
    int map[1024], k = 0, i, j;
    for (i = 0; i < n && k < 1024; i++)
        if (!c[i].closed) {
            pf[k].fd = c[i].fd;
            pf[k].events = POLLIN;
            map[k++] = i;
        }
    if (!k) {
        ab_sleep_ms(ms);
        return;
    }
    if (poll(pf, (nfds_t)k, (int)ms) <= 0) return;
    for (j = 0; j < k; j++) {
        struct ab_coll *x = &c[map[j]];
        char tmp[16384];
        ssize_t r;
        if (!pf[j].revents) continue;
        r = recv(x->fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (r > 0) {
            size_t room = sizeof x->buf - 1 - x->len, m = (size_t)r < room ? (size_t)r : room;
            memcpy(x->buf + x->len, tmp, m);
            x->len += m;
            x->buf[x->len] = 0;
            x->total += r;
        } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
            x->closed = 1;
            x->how = r == 0 ? 0 : AB_RESET;
            x->closed_at = ab_now_ms();
        }
    }
}

/* Polls until every one is closed or timeout_ms passed; returns how many
 * are still open. */
AB_FN int ab_coll_wait_closed(struct ab_coll *c, int n, long timeout_ms) {
    long t0 = ab_now_ms();
    int open = 0, i;
    for (;;) {
        for (open = 0, i = 0; i < n; i++) open += !c[i].closed;
        if (!open || ab_now_ms() - t0 >= timeout_ms) return open;
        ab_coll_poll(c, n, 20);
    }
}

/* The status of the response at the start of a collector's bytes (0 if
 * there is no whole head). */
AB_FN int ab_coll_status(const struct ab_coll *c) {
    int minor, st;
    if (!strstr(c->buf, "\r\n\r\n")) return 0;
    return sscanf(c->buf, "HTTP/1.%d %d", &minor, &st) == 2 ? st : 0;
}

AB_FN void ab_coll_close(struct ab_coll *c, int n) {
    int i;
    for (i = 0; i < n; i++)
        if (c[i].fd >= 0) {
            close(c[i].fd);
            c[i].fd = -1;
            c[i].closed = 1;
        }
}

#endif
