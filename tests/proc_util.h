/* proc_util.h: the suites' real peers as child processes (nginx, Python,
 * openssl s_server, ...): spawn with stdout to a pipe and stderr to a file,
 * stop (SIGTERM, then SIGKILL), wait for a port to accept, a temporary
 * directory that goes away at exit whatever happens. A test that stops
 * early (REQUIRE) still kills what it started; the parent-death signal
 * covers a test killed by its alarm. Included by one suite file each
 * (static inline: what a file does not use costs nothing). */
#ifndef TN_PROC_UTIL_H
#define TN_PROC_UTIL_H
#include "tn_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

static inline void proc_sleep_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

#define MAX_CHILDREN 4
static pid_t children[MAX_CHILDREN];
static int children_hooked;
static char tmp_dir[64]; /* the test's temporary directory, if any */

static inline int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}
static inline void rm_rf(const char *dir) {
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    if (strcmp(tmp_dir, dir) == 0) tmp_dir[0] = 0;
}

/* A test that stops early (REQUIRE) still kills what it started and
 * removes its directory; the parent-death signal covers a test killed by
 * its alarm. */
static inline void kill_children(void) {
    int i;
    for (i = 0; i < MAX_CHILDREN; i++)
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    if (tmp_dir[0]) rm_rf(tmp_dir);
}

/* mkdtemp, and the directory goes away at exit whatever happens. */
static inline void make_tmp_dir(char *tmpl) {
    REQUIRE(mkdtemp(tmpl) != NULL);
    snprintf(tmp_dir, sizeof tmp_dir, "%s", tmpl);
    if (!children_hooked) {
        atexit(kill_children);
        children_hooked = 1;
    }
}

/* Starts argv[0] with stdout to a pipe (*out_fd, or /dev/null if NULL) and
 * stderr to err_path (or /dev/null). */
static inline pid_t spawn(char *const argv[], int *out_fd, const char *err_path) {
    int p[2] = {-1, -1}, i;
    pid_t pid;
    if (!children_hooked) {
        atexit(kill_children);
        children_hooked = 1;
    }
    if (out_fd) REQUIRE(pipe(p) == 0);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        int err = err_path ? open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0644) : devnull;
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
        signal(SIGPIPE, SIG_DFL);
        dup2(devnull, 0);
        dup2(out_fd ? p[1] : devnull, 1);
        dup2(err >= 0 ? err : devnull, 2);
        if (out_fd) {
            close(p[0]);
            close(p[1]);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    if (out_fd) {
        close(p[1]);
        *out_fd = p[0];
    }
    for (i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == 0) {
            children[i] = pid;
            break;
        }
    return pid;
}

/* Stops a child: SIGTERM, then SIGKILL if it lingers. Returns its status. */
static inline int stop_child(pid_t pid) {
    int status = 0, i;
    kill(pid, SIGTERM);
    for (i = 0; i < 300; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid) goto done;
        proc_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
done:
    for (i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == pid) children[i] = 0;
    return status;
}

/* Waits for a child to exit by itself (ms deadline); -1 if it did not. */
static inline int wait_child(pid_t pid, int ms, int *status) {
    int i;
    for (i = 0; i < ms / 10; i++) {
        if (waitpid(pid, status, WNOHANG) == pid) {
            for (i = 0; i < MAX_CHILDREN; i++)
                if (children[i] == pid) children[i] = 0;
            return 0;
        }
        proc_sleep_ms(10);
    }
    return -1;
}

/* Polls until something accepts connections on port (or ms pass, or the
 * child dies). */
static inline int wait_port(int port, int ms, pid_t child) {
    struct sockaddr_in a;
    int i;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    for (i = 0; i < ms / 20; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), rc, st;
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
        close(fd);
        if (rc == 0) return 0;
        if (child > 0 && waitpid(child, &st, WNOHANG) == child) {
            for (i = 0; i < MAX_CHILDREN; i++)
                if (children[i] == child) children[i] = 0;
            return -1;
        }
        proc_sleep_ms(20);
    }
    return -1;
}

/* A port free right now (bound to 0, then released). */
static inline int free_port(void) {
    struct sockaddr_in a;
    socklen_t sl = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    REQUIRE(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &sl) == 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Reads from fd until `until` appears or EOF or ms pass. */
static inline size_t read_until_str(int fd, char *buf, size_t cap, const char *until, int ms) {
    size_t len = 0;
    int waited = 0;
    buf[0] = 0;
    while (len + 1 < cap && waited < ms) {
        struct pollfd p;
        ssize_t n;
        p.fd = fd;
        p.events = POLLIN;
        p.revents = 0;
        if (poll(&p, 1, 50) == 0) {
            waited += 50;
            continue;
        }
        n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        buf[len] = 0;
        if (until && strstr(buf, until)) break;
    }
    return len;
}

static inline void write_file(const char *dir, const char *name, const char *content) {
    char path[1024];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs(content, f);
    fclose(f);
}

static inline char *read_file(const char *path) {
    FILE *f = fopen(path, "r");
    char *s;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = (char *)calloc(1, (size_t)n + 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = 0;
    fclose(f);
    return s;
}


static inline void print_file(const char *path) {
    char *s = read_file(path);
    if (s && *s) fprintf(stderr, "    --- %s:\n%s\n", path, s);
    free(s);
}

static inline int have_tornado(void) {
    char *argv[] = {(char *)"/usr/bin/python3", (char *)"-c", (char *)"import tornado", NULL};
    int status = 0;
    pid_t pid;
    if (access("/usr/bin/python3", X_OK) != 0) return 0;
    pid = spawn(argv, NULL, NULL);
    if (wait_child(pid, 20000, &status) != 0) {
        stop_child(pid);
        return 0;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* ------------------------------------------------------------------ */
/* Tools                                                               */
/* ------------------------------------------------------------------ */

/* An executable named name on PATH (or the path itself if it has a '/'). */
static inline int have_tool(const char *name) {
    const char *path = getenv("PATH");
    char buf[4096];
    if (strchr(name, '/')) return access(name, X_OK) == 0;
    if (!path) path = "/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        if (n && n + strlen(name) + 2 < sizeof buf) {
            memcpy(buf, path, n);
            buf[n] = '/';
            strcpy(buf + n + 1, name);
            if (access(buf, X_OK) == 0) return 1;
        }
        path += n;
        if (*path == ':') path++;
    }
    return 0;
}

/* Runs cmd through the shell; returns its output (malloc'd, NUL-terminated)
 * and *status its exit status (-1 if it did not exit normally). */
static inline char *run(const char *cmd, int *status) {
    FILE *p;
    char *out = NULL;
    size_t len = 0, cap = 0;
    int st;
    fflush(stdout);
    fflush(stderr);
    p = popen(cmd, "r");
    REQUIRE(p != NULL);
    for (;;) {
        size_t n;
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 65536;
            out = (char *)realloc(out, cap);
            REQUIRE(out != NULL);
        }
        n = fread(out + len, 1, cap - len - 1, p);
        if (n == 0) break;
        len += n;
    }
    out[len] = 0;
    st = pclose(p);
    *status = (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
    if (*status != 0) fprintf(stderr, "    `%s` exited %d; output:\n%s\n", cmd, *status, out);
    return out;
}

static inline int count(const char *hay, const char *needle) {
    int n = 0;
    const char *p = hay;
    while ((p = strstr(p, needle)) != NULL) {
        n++;
        p += strlen(needle);
    }
    return n;
}

#endif
