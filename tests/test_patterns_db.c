/* The database and cache patterns, run as a user would run them:
 * examples/todo on SQLite and on PostgreSQL (the whole API, its 400s and
 * 404s; the cache's single-flight and invalidation; a statement cancelled
 * on the server when its client leaves or its time is up), two todo
 * processes sharing one cache in Redis, and examples/aggregator against
 * upstreams that stall, refuse, fail and answer.
 * The servers are the test's own, on free loopback ports, with their files
 * in a temporary directory, stopped and removed at the end (and killed
 * with the test if it dies: PR_SET_PDEATHSIG): a PostgreSQL cluster
 * (initdb, then postgres run as the postgres user when we are root, as CI
 * is) and a redis-server (--save "" --appendonly no).
 * examples/todo links libraries a cross compiler has not got, so a cross
 * run (make check-cross, where ./tornado.h is a link to the real one) runs
 * the native build from the repository root; the plain examples are the
 * cross-built ones there. A missing tool is a SKIP (a failure under
 * CI=true). Run from the repository root. */
#include "http_util.h"

#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* ------------------------------------------------------------------ */
/* Children and temporary directories, cleaned up however the test ends */
/* ------------------------------------------------------------------ */
#define MAX_KIDS 8
static struct kid {
    pid_t pid;
    int stop_signal; /* what makes it stop fast: SIGTERM, or SIGINT for postgres */
} kids[MAX_KIDS];
static char temp_dirs[4][64];

static void rm_rf(const char *dir) {
    pid_t p = fork();
    if (p == 0) {
        execl("/bin/rm", "rm", "-rf", dir, (char *)NULL);
        _exit(127);
    }
    if (p > 0) waitpid(p, NULL, 0);
}

/* Waits up to ms for pid to exit: its status, or -1 (still running). */
static int wait_exit(pid_t pid, int ms) {
    int status, i;
    for (i = 0; i <= ms / 10; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (r < 0) return -2;
        if (i < ms / 10) sleep_ms(10);
    }
    return -1;
}

/* Stops one child: its stop signal, then SIGKILL after 5 s. Its exit status. */
static int stop_kid(pid_t pid) {
    int i, sig = SIGTERM, rc;
    for (i = 0; i < MAX_KIDS; i++)
        if (kids[i].pid == pid) {
            sig = kids[i].stop_signal;
            kids[i].pid = 0;
        }
    kill(pid, sig);
    if ((rc = wait_exit(pid, 5000)) == -1) {
        kill(pid, SIGKILL);
        rc = wait_exit(pid, 5000);
    }
    return rc;
}

static void cleanup(void) {
    int i;
    for (i = 0; i < MAX_KIDS; i++)
        if (kids[i].pid > 0) stop_kid(kids[i].pid);
    for (i = 0; i < 4; i++)
        if (temp_dirs[i][0]) {
            rm_rf(temp_dirs[i]);
            temp_dirs[i][0] = 0;
        }
}

/* The runner's alarm: clean up first, then die of it as it expects. */
static void on_alarm(int sig) {
    cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void watch_cleanup(void) {
    static int done;
    if (done++) return;
    atexit(cleanup);
    signal(SIGALRM, on_alarm);
}

static void add_kid(pid_t pid, int stop_signal) {
    int i;
    for (i = 0; i < MAX_KIDS; i++)
        if (!kids[i].pid) {
            kids[i].pid = pid;
            kids[i].stop_signal = stop_signal;
            return;
        }
    REQUIRE(!"too many children");
}

/* A new empty directory, removed at the end: 0 or -1. */
static int make_temp_dir(char *out, size_t cap) {
    int i;
    watch_cleanup();
    snprintf(out, cap, "/tmp/tn-db-test.XXXXXX");
    if (!mkdtemp(out)) return -1;
    for (i = 0; i < 4; i++)
        if (!temp_dirs[i][0]) {
            snprintf(temp_dirs[i], sizeof temp_dirs[i], "%s", out);
            break;
        }
    return 0;
}

/* A port nothing listens on right now. */
static int free_port(void) {
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* Forks argv[0] (a path) with its output to fd out (-1: ours), in dir cwd
 * (NULL: ours), as user pw (NULL: ourselves), dying with us. */
static pid_t spawn(char *const argv[], const char *cwd, int out, const struct passwd *pw, int death_signal) {
    pid_t pid = fork();
    if (pid == 0) {
        if (out >= 0) {
            dup2(out, 1);
            dup2(out, 2);
        }
        if (cwd && chdir(cwd) != 0) _exit(126);
        if (pw && (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0))
            _exit(126);
        prctl(PR_SET_PDEATHSIG, death_signal); /* after setuid, which clears it */
        signal(SIGALRM, SIG_DFL);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Starts an example server with "--port 0" among its arguments and reads
 * its "listening on http://127.0.0.1:PORT" line (10 s at most). The pid,
 * *port set; stderr stays ours. */
static pid_t start_server(char *const argv[], const char *cwd, int *port) {
    int fds[2], n = 0;
    char line[256];
    struct pollfd pfd;
    pid_t pid;
    *port = 0;
    REQUIRE(pipe(fds) == 0);
    pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        if (cwd && chdir(cwd) != 0) _exit(126);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGALRM, SIG_DFL);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    REQUIRE(pid > 0);
    add_kid(pid, SIGTERM);
    pfd.fd = fds[0];
    pfd.events = POLLIN;
    while (n < (int)sizeof line - 1 && poll(&pfd, 1, 10000) == 1 && read(fds[0], line + n, 1) == 1 && line[n] != '\n')
        n++;
    line[n] = 0;
    close(fds[0]);
    sscanf(line, "listening on http://127.0.0.1:%d", port);
    if (*port <= 0) fprintf(stderr, "    %s did not start: \"%s\"\n", argv[0], line);
    return pid;
}

/* Runs cmd (a shell line); its output in buf. The exit status. */
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

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ */
/* The examples                                                         */
/* ------------------------------------------------------------------ */
/* Where examples/todo is: here, or in a cross run (./tornado.h a link into
 * the repository) the repository's own native build. */
static const char *todo_path(void) {
    static char path[PATH_MAX + 32];
    char real[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/examples/todo", getcwd(real, sizeof real) ? real : ".");
    if (lstat("tornado.h", &st) == 0 && S_ISLNK(st.st_mode) && realpath("tornado.h", real)) {
        char *slash = strrchr(real, '/');
        if (slash) *slash = 0;
        snprintf(path, sizeof path, "%s/examples/todo", real);
    }
    return path;
}

/* NULL when examples/todo is built with what the test needs ("pg",
 * "redis" or ""), else the package that is missing. */
static const char *todo_missing(const char *feature) {
    char cmd[PATH_MAX + 64], out[512];
    if (access(todo_path(), X_OK) != 0) {
        if (run("pkg-config --exists sqlite3 2>/dev/null", out, sizeof out) != 0) return "libsqlite3-dev";
        if (run("pkg-config --exists libcjson 2>/dev/null", out, sizeof out) != 0) return "libcjson-dev";
        fprintf(stderr, "    %s is not built: make examples\n", todo_path());
        REQUIRE(!"examples/todo built");
    }
    snprintf(cmd, sizeof cmd, "%s --help 2>&1", todo_path());
    run(cmd, out, sizeof out);
    REQUIRE(strstr(out, "built with: sqlite") != NULL);
    if (strcmp(feature, "pg") == 0 && !strstr(out, " pg")) return "libpq-dev";
    if (strcmp(feature, "redis") == 0 && !strstr(out, " redis")) return "libhiredis-dev";
    return NULL;
}

/* todo with args (a NULL-terminated list, after --port 0), in dir cwd:
 * the pid, *port set. */
#define ARGS(...) ((const char *[]){__VA_ARGS__, NULL})
static pid_t start_todo(const char *cwd, int *port, const char **args) {
    char *argv[16];
    int n = 0;
    pid_t pid;
    argv[n++] = (char *)todo_path();
    argv[n++] = (char *)"--port";
    argv[n++] = (char *)"0";
    while (*args && n < 15) argv[n++] = (char *)*args++;
    argv[n] = NULL;
    pid = start_server(argv, cwd, port);
    REQUIRE(*port > 0);
    return pid;
}

/* One request on a new connection; the status (-1 if no response came). */
static int http(int port, const char *method, const char *path, const char *json, response *r) {
    char req[8192];
    client *c = cli_open(port);
    int rc;
    if (json)
        snprintf(req, sizeof req,
                 "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\n\r\n%s",
                 method, path, strlen(json), json);
    else snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", method, path);
    rc = roundtrip(c, req, r);
    cli_close(c);
    return rc ? -1 : r->status;
}

/* A request whose status and body must be these (body NULL: any). */
static void expect(int port, const char *method, const char *path, const char *json, int status, const char *body) {
    response r;
    int got = http(port, method, path, json, &r);
    CHECK_EQ_INT(got, status);
    if (body) CHECK(body_is(&r, body));
    if (got != status || (body && !body_is(&r, body)))
        fprintf(stderr, "    %s %s %s -> %d %s\n", method, path, json ? json : "", got, r.body ? r.body : "");
    if (got >= 400) CHECK(header_is(&r, "Content-Type", "application/json"));
    if (got >= 400 && r.body) CHECK(strncmp(r.body, "{\"error\":\"", 10) == 0);
    resp_free(&r);
}

/* A number field of a JSON object in a body, or -1. */
static long long json_num(const char *body, const char *name) {
    char key[64];
    const char *p;
    snprintf(key, sizeof key, "\"%s\":", name);
    p = body ? strstr(body, key) : NULL;
    return p ? strtoll(p + strlen(key), NULL, 10) : -1;
}

static long long stat_of(int port, const char *name) {
    response r;
    long long v;
    CHECK_EQ_INT(http(port, "GET", "/stats", NULL, &r), 200);
    v = json_num(r.body, name);
    resp_free(&r);
    return v;
}

/* n requests for path sent at once on n connections; then every answer
 * must be 200 with one same body, which contains want. */
static void concurrent_gets(int port, const char *path, int n, const char *want) {
    client *c[100];
    response r;
    char req[256], *first = NULL;
    int i, same = 1;
    REQUIRE(n <= 100);
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
    for (i = 0; i < n; i++) {
        c[i] = cli_open(port);
        CHECK_EQ_INT(cli_sends(c[i], req), 0);
    }
    for (i = 0; i < n; i++) {
        CHECK_EQ_INT(read_response(c[i], &r, 0), 0);
        CHECK_EQ_INT(r.status, 200);
        if (!first) first = strdup(r.body ? r.body : "");
        else if (!r.body || strcmp(first, r.body) != 0) same = 0;
        resp_free(&r);
        cli_close(c[i]);
    }
    CHECK(same);
    CHECK(first && strstr(first, want) != NULL);
    free(first);
}

/* The whole API on a fresh database (ids from 1). */
static void check_api(int port) {
    response r;
    expect(port, "GET", "/todos", NULL, 200, "[]");
    CHECK_EQ_INT(http(port, "POST", "/todos", "{\"title\": \"buy milk\"}", &r), 201);
    CHECK(header_is(&r, "Location", "/todos/1"));
    CHECK(header_is(&r, "Content-Type", "application/json"));
    CHECK(body_is(&r, "{\"id\":1,\"title\":\"buy milk\",\"done\":false}"));
    resp_free(&r);
    expect(port, "POST", "/todos", "{\"title\": \"walk \\\"the\\\" dog\\n\", \"done\": true}", 201,
           "{\"id\":2,\"title\":\"walk \\\"the\\\" dog\\n\",\"done\":true}");
    expect(port, "GET", "/todos", NULL, 200,
           "[{\"id\":1,\"title\":\"buy milk\",\"done\":false},{\"id\":2,\"title\":\"walk \\\"the\\\" dog\\n\",\"done\":true}]");
    expect(port, "GET", "/todos/1", NULL, 200, "{\"id\":1,\"title\":\"buy milk\",\"done\":false}");
    expect(port, "GET", "/todos/001", NULL, 200, "{\"id\":1,\"title\":\"buy milk\",\"done\":false}");
    expect(port, "PUT", "/todos/1", "{\"done\": true}", 200, "{\"id\":1,\"title\":\"buy milk\",\"done\":true}");
    expect(port, "PUT", "/todos/1", "{\"title\": \"buy oat milk\"}", 200,
           "{\"id\":1,\"title\":\"buy oat milk\",\"done\":true}");
    expect(port, "PUT", "/todos/1", "{\"title\": \"buy milk\", \"done\": false}", 200,
           "{\"id\":1,\"title\":\"buy milk\",\"done\":false}");
    /* parameters, never SQL: this is a title like any other */
    expect(port, "POST", "/todos", "{\"title\": \"x'); DROP TABLE todos; --\"}", 201,
           "{\"id\":3,\"title\":\"x'); DROP TABLE todos; --\",\"done\":false}");
    expect(port, "GET", "/todos/3", NULL, 200, "{\"id\":3,\"title\":\"x'); DROP TABLE todos; --\",\"done\":false}");
    /* 400: not JSON, not an object, a field missing or of the wrong type */
    expect(port, "POST", "/todos", "not json", 400, NULL);
    expect(port, "POST", "/todos", "", 400, NULL);
    expect(port, "POST", "/todos", "{\"title\": \"a\"} trailing", 400, NULL);
    expect(port, "POST", "/todos", "[1, 2]", 400, NULL);
    expect(port, "POST", "/todos", "{}", 400, "{\"error\":\"title is required\"}");
    expect(port, "POST", "/todos", "{\"done\": true}", 400, "{\"error\":\"title is required\"}");
    expect(port, "POST", "/todos", "{\"title\": 5}", 400, "{\"error\":\"title must be a non-empty string\"}");
    expect(port, "POST", "/todos", "{\"title\": \"\"}", 400, NULL);
    expect(port, "POST", "/todos", "{\"title\": \"a\", \"done\": \"yes\"}", 400,
           "{\"error\":\"done must be true or false\"}");
    expect(port, "PUT", "/todos/1", "{}", 400, "{\"error\":\"give title or done\"}");
    expect(port, "PUT", "/todos/1", "{\"done\": 1}", 400, NULL);
    expect(port, "PUT", "/todos/1", "{\"title\": null}", 400, NULL);
    /* 404: unknown ids, ids that are no ids, unknown paths */
    expect(port, "GET", "/todos/999", NULL, 404, "{\"error\":\"no such todo\"}");
    expect(port, "GET", "/todos/abc", NULL, 404, NULL);
    expect(port, "GET", "/todos/0", NULL, 404, NULL);
    expect(port, "GET", "/todos/99999999999999999999", NULL, 404, NULL);
    expect(port, "PUT", "/todos/999", "{\"done\": true}", 404, NULL);
    expect(port, "DELETE", "/todos/999", NULL, 404, NULL);
    expect(port, "GET", "/nothing/here", NULL, 404, "{\"error\":\"Not Found\"}");
    expect(port, "PATCH", "/todos/1", NULL, 405, "{\"error\":\"Method Not Allowed\"}");
    /* delete */
    CHECK_EQ_INT(http(port, "DELETE", "/todos/2", NULL, &r), 204);
    CHECK_EQ_INT(r.body_len, 0);
    resp_free(&r);
    expect(port, "GET", "/todos/2", NULL, 404, NULL);
    expect(port, "DELETE", "/todos/2", NULL, 404, NULL);
    expect(port, "GET", "/todos", NULL, 200,
           "[{\"id\":1,\"title\":\"buy milk\",\"done\":false},{\"id\":3,\"title\":\"x'); DROP TABLE todos; --\","
           "\"done\":false}]");
}

/* With a cache: one query for 100 concurrent reads after a write, hits
 * after that, and every write seen by the next read. */
static void check_cache(int port) {
    response r;
    long long q0, m0, h0;
    CHECK_EQ_INT(http(port, "POST", "/todos", "{\"title\": \"cached\"}", &r), 201);
    resp_free(&r);
    q0 = stat_of(port, "db_queries");
    m0 = stat_of(port, "cache_misses");
    h0 = stat_of(port, "cache_hits");
    concurrent_gets(port, "/todos", 100, "\"title\":\"cached\"");
    CHECK_EQ_INT(stat_of(port, "db_queries"), q0 + 1); /* single-flight: one query for all 100 */
    CHECK_EQ_INT(stat_of(port, "cache_misses"), m0 + 1);
    CHECK_EQ_INT(stat_of(port, "cache_hits"), h0 + 99);
    concurrent_gets(port, "/todos", 20, "\"title\":\"cached\"");
    CHECK_EQ_INT(stat_of(port, "db_queries"), q0 + 1); /* cached */
    /* one item: cached under its own key */
    expect(port, "GET", "/todos/1", NULL, 200, "{\"id\":1,\"title\":\"cached\",\"done\":false}");
    expect(port, "GET", "/todos/1", NULL, 200, "{\"id\":1,\"title\":\"cached\",\"done\":false}");
    CHECK_EQ_INT(stat_of(port, "db_queries"), q0 + 2);
    /* a write invalidates the list and the item */
    expect(port, "PUT", "/todos/1", "{\"done\": true}", 200, NULL);
    CHECK_EQ_INT(stat_of(port, "db_queries"), q0 + 3);
    expect(port, "GET", "/todos/1", NULL, 200, "{\"id\":1,\"title\":\"cached\",\"done\":true}");
    expect(port, "GET", "/todos", NULL, 200, "[{\"id\":1,\"title\":\"cached\",\"done\":true}]");
    CHECK_EQ_INT(stat_of(port, "db_queries"), q0 + 5);
    expect(port, "POST", "/todos", "{\"title\": \"second\"}", 201, NULL);
    concurrent_gets(port, "/todos", 100, "\"title\":\"second\"");
    CHECK_EQ_INT(stat_of(port, "db_queries"), q0 + 7);
    expect(port, "DELETE", "/todos/1", NULL, 204, NULL);
    expect(port, "GET", "/todos/1", NULL, 404, NULL);
    expect(port, "GET", "/todos", NULL, 200, "[{\"id\":2,\"title\":\"second\",\"done\":false}]");
    expect(port, "GET", "/todos/1", NULL, 404, NULL); /* a 404 is not cached: each asks */
    CHECK_EQ_INT(stat_of(port, "db_queries"), q0 + 11);
}

/* ------------------------------------------------------------------ */
/* PostgreSQL: a cluster of our own                                     */
/* ------------------------------------------------------------------ */
typedef struct pgsrv {
    char dir[64], bin[256], conninfo[256];
    int port;
    pid_t pid;
} pgsrv;

/* The server's bin directory (pg_config's, else the newest under
 * /usr/lib/postgresql) into out[256]: 0, or -1 when there is none. */
static int pg_bindir(char out[256]) {
    static const char *const ways[] = {"pg_config --bindir 2>/dev/null",
                                       "ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1"};
    char path[300];
    int i;
    for (i = 0; i < 2; i++) {
        if (run(ways[i], out, 200) != 0) continue;
        out[strcspn(out, "\n")] = 0;
        snprintf(path, sizeof path, "%s/initdb", out);
        if (out[0] && access(path, X_OK) == 0) return 0;
    }
    return -1;
}

/* Runs sql with psql; its output (unaligned, tuples only) in out. */
static int psql(const pgsrv *pg, const char *sql, char *out, size_t cap) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "PGCONNECT_TIMEOUT=5 %s/psql -X -q -h 127.0.0.1 -p %d -U postgres -d postgres -Atc \"%s\" 2>&1",
             pg->bin, pg->port, sql);
    return run(cmd, out, cap);
}

static void show_log(const char *path) {
    char cmd[256], out[8];
    snprintf(cmd, sizeof cmd, "tail -n 20 %s >&2", path);
    run(cmd, out, sizeof out);
}

/* initdb and postgres, as the postgres user when we are root (the server
 * refuses to run as root). NULL, or the package that is missing. */
static const char *pg_start(pgsrv *pg) {
    const struct passwd *pw = NULL;
    char data[128], log[128], arg_p[16], initdb[PATH_MAX + 16], postgres[PATH_MAX + 16], out[256];
    int fd, tries, i;
    memset(pg, 0, sizeof *pg);
    if (pg_bindir(pg->bin) != 0) return "postgresql";
    if (getuid() == 0 && !(pw = getpwnam("postgres"))) return "postgresql";
    REQUIRE(make_temp_dir(pg->dir, sizeof pg->dir) == 0);
    if (pw) REQUIRE(chown(pg->dir, pw->pw_uid, pw->pw_gid) == 0);
    snprintf(data, sizeof data, "%s/data", pg->dir);
    snprintf(log, sizeof log, "%s/server.log", pg->dir);
    snprintf(initdb, sizeof initdb, "%s/initdb", pg->bin);
    snprintf(postgres, sizeof postgres, "%s/postgres", pg->bin);
    REQUIRE((fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644)) >= 0);
    {
        char *argv[] = {initdb, (char *)"-D", data, (char *)"-A", (char *)"trust", (char *)"-U", (char *)"postgres",
                        (char *)"-N", (char *)"-E", (char *)"UTF8", (char *)"--locale=C", NULL};
        pid_t p = spawn(argv, pg->dir, fd, pw, SIGKILL);
        REQUIRE(p > 0);
        if (wait_exit(p, 30000) != 0) {
            close(fd);
            show_log(log);
            REQUIRE(!"initdb");
        }
    }
    for (tries = 0; tries < 3 && !pg->pid; tries++) {
        char *argv[] = {postgres, (char *)"-D", data, (char *)"-p", arg_p, (char *)"-k", pg->dir, (char *)"-c",
                        (char *)"listen_addresses=127.0.0.1", (char *)"-c", (char *)"fsync=off", (char *)"-c",
                        (char *)"full_page_writes=off", (char *)"-c", (char *)"max_connections=40", NULL};
        pg->port = free_port();
        snprintf(arg_p, sizeof arg_p, "%d", pg->port);
        pg->pid = spawn(argv, pg->dir, fd, pw, SIGQUIT); /* SIGQUIT: the immediate shutdown */
        REQUIRE(pg->pid > 0);
        add_kid(pg->pid, SIGINT); /* SIGINT: the fast shutdown */
        for (i = 0; i < 200; i++) { /* ready within 10 s, or gone (the port was taken) */
            if (wait_exit(pg->pid, 0) != -1) {
                pg->pid = 0;
                break;
            }
            if (psql(pg, "SELECT 1", out, sizeof out) == 0 && strcmp(out, "1\n") == 0) break;
            sleep_ms(50);
        }
        if (pg->pid && i == 200) {
            stop_kid(pg->pid);
            pg->pid = 0;
        }
    }
    close(fd);
    if (!pg->pid) show_log(log);
    REQUIRE(pg->pid > 0);
    snprintf(pg->conninfo, sizeof pg->conninfo, "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=5",
             pg->port);
    return NULL;
}

static void pg_stop(pgsrv *pg) {
    if (pg->pid) CHECK_EQ_INT(stop_kid(pg->pid), 0);
    pg->pid = 0;
}

/* The backends of todo's pool: "pid|state|query" lines. */
static void pool_backends(const pgsrv *pg, char *out, size_t cap) {
    psql(pg, "SELECT pid, state, left(query, 24) FROM pg_stat_activity WHERE application_name = 'todo'", out, cap);
}

/* Waits (up to ms) until todo's one backend is in state ("active" or
 * "idle"); its pid, or 0. */
static long wait_backend(const pgsrv *pg, const char *state, int ms) {
    char out[1024], want[32];
    uint64_t end = now_ms() + (uint64_t)ms;
    snprintf(want, sizeof want, "|%s|", state);
    do {
        pool_backends(pg, out, sizeof out);
        if (strstr(out, want) && !strchr(strchr(out, '\n') + 1, '\n')) return atol(out);
        sleep_ms(20);
    } while (now_ms() < end);
    fprintf(stderr, "    todo's backends: %s\n", out);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Redis                                                                */
/* ------------------------------------------------------------------ */
/* A command in Redis's inline form; the first line of the reply in out. */
static int redis_cmd(int port, const char *cmd, char *out, size_t cap) {
    client *c;
    long eol;
    int fd = tcp_connect(port, 0);
    if (fd < 0) return -1;
    close(fd);
    c = cli_open(port);
    if (cli_sends(c, cmd) || cli_sends(c, "\r\n") || (eol = cli_find(c, 0, "\r\n")) < 0) {
        cli_close(c);
        return -1;
    }
    snprintf(out, cap, "%.*s", (int)eol, c->buf);
    cli_close(c);
    return 0;
}

/* redis-server on a free port, in dir: its pid (*port set), or 0 when it
 * is not installed. */
static pid_t redis_start(const char *dir, int *port) {
    char path[PATH_MAX], arg_p[16], out[64], log[128];
    int tries, i, fd;
    pid_t pid = 0;
    if (run("command -v redis-server", path, sizeof path) != 0) return 0;
    path[strcspn(path, "\n")] = 0;
    snprintf(log, sizeof log, "%s/redis.log", dir);
    REQUIRE((fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644)) >= 0);
    for (tries = 0; tries < 3 && !pid; tries++) {
        char *argv[] = {path, (char *)"--port", arg_p, (char *)"--bind", (char *)"127.0.0.1", (char *)"--save",
                        (char *)"", (char *)"--appendonly", (char *)"no", (char *)"--dir", (char *)dir,
                        (char *)"--daemonize", (char *)"no", (char *)"--loglevel", (char *)"warning", NULL};
        *port = free_port();
        snprintf(arg_p, sizeof arg_p, "%d", *port);
        REQUIRE((pid = spawn(argv, dir, fd, NULL, SIGKILL)) > 0);
        add_kid(pid, SIGTERM);
        for (i = 0; i < 200; i++) {
            if (wait_exit(pid, 0) != -1) {
                pid = 0;
                break;
            }
            if (redis_cmd(*port, "PING", out, sizeof out) == 0 && strcmp(out, "+PONG") == 0) break;
            sleep_ms(50);
        }
    }
    close(fd);
    if (!pid) show_log(log);
    REQUIRE(pid > 0);
    return pid;
}

/* ------------------------------------------------------------------ */
/* The tests                                                            */
/* ------------------------------------------------------------------ */
TEST(todo_on_sqlite_serves_the_whole_api) {
    char dir[64], file[128];
    const char *missing = todo_missing("");
    int port;
    pid_t pid;
    struct stat st;
    if (missing) {
        char why[96];
        snprintf(why, sizeof why, "%s not installed", missing);
        SKIP(why);
    }
    REQUIRE(make_temp_dir(dir, sizeof dir) == 0);
    /* the default database: todo.db in the current directory, created */
    pid = start_todo(dir, &port, ARGS(NULL));
    check_api(port);
    CHECK_EQ_INT(stop_kid(pid), 0);
    snprintf(file, sizeof file, "%s/todo.db", dir);
    CHECK(stat(file, &st) == 0 && st.st_size > 0);
    /* and the data is there the next time */
    pid = start_todo(dir, &port, ARGS(NULL));
    expect(port, "GET", "/todos/1", NULL, 200, "{\"id\":1,\"title\":\"buy milk\",\"done\":false}");
    CHECK_EQ_INT(stop_kid(pid), 0);
    /* --db FILE */
    snprintf(file, sizeof file, "%s/other.db", dir);
    pid = start_todo(dir, &port, ARGS("--db", file));
    expect(port, "GET", "/todos", NULL, 200, "[]");
    CHECK_EQ_INT(stop_kid(pid), 0);
    CHECK(stat(file, &st) == 0);
}

TEST(todo_on_sqlite_cache_is_single_flight_and_invalidated_by_writes) {
    char dir[64];
    const char *missing = todo_missing("");
    int port;
    pid_t pid;
    if (missing) {
        char why[96];
        snprintf(why, sizeof why, "%s not installed", missing);
        SKIP(why);
    }
    REQUIRE(make_temp_dir(dir, sizeof dir) == 0);
    pid = start_todo(dir, &port, ARGS("--cache-ttl", "60"));
    check_cache(port);
    CHECK_EQ_INT(stop_kid(pid), 0);
    /* the whole API is the same with the cache in front */
    pid = start_todo(dir, &port, ARGS("--cache-ttl", "60", "--db", "fresh.db"));
    check_api(port);
    CHECK_EQ_INT(stop_kid(pid), 0);
}

TEST(todo_on_postgresql_serves_the_whole_api_and_caches) {
    pgsrv pg;
    const char *missing = todo_missing("pg");
    int port;
    pid_t pid;
    char out[256];
    if (!missing) missing = pg_start(&pg);
    if (missing) {
        char why[96];
        snprintf(why, sizeof why, "%s not installed", missing);
        SKIP(why);
    }
    pid = start_todo(pg.dir, &port, ARGS("--pg", pg.conninfo));
    check_api(port);
    CHECK_EQ_INT(stop_kid(pid), 0);
    /* the rows are PostgreSQL's */
    CHECK_EQ_INT(psql(&pg, "SELECT string_agg(id || ':' || title || ':' || done, ',' ORDER BY id) FROM todos", out,
                      sizeof out),
                 0);
    CHECK_EQ_INT(strcmp(out, "1:buy milk:false,3:x'); DROP TABLE todos; --:false\n"), 0);
    CHECK_EQ_INT(psql(&pg, "DROP TABLE todos", out, sizeof out), 0);
    pid = start_todo(pg.dir, &port, ARGS("--pg", pg.conninfo, "--cache-ttl", "60", "--pool", "2"));
    check_cache(port);
    CHECK_EQ_INT(stop_kid(pid), 0);
    pg_stop(&pg);
}

/* A slow statement through the debug route: its time running out, or its
 * client resetting the connection, cancels it on the server, and the one
 * pool connection (the same backend) serves the next request at once. */
TEST(todo_on_postgresql_cancels_a_statement_whose_client_left) {
    pgsrv pg;
    const char *missing = todo_missing("pg");
    int port;
    pid_t pid;
    long backend, after;
    uint64_t t0;
    response r;
    client *c;
    if (!missing) missing = pg_start(&pg);
    if (missing) {
        char why[96];
        snprintf(why, sizeof why, "%s not installed", missing);
        SKIP(why);
    }
    /* the statement's timeout */
    pid = start_todo(pg.dir, &port, ARGS("--pg", pg.conninfo, "--pool", "1", "--db-timeout", "400", "--debug"));
    REQUIRE((backend = wait_backend(&pg, "idle", 3000)) > 0); /* the start-up query opened it */
    t0 = now_ms();
    CHECK_EQ_INT(http(port, "GET", "/debug/sleep/5000", NULL, &r), 504);
    resp_free(&r);
    CHECK(now_ms() - t0 < 2500);
    CHECK_EQ_INT(wait_backend(&pg, "idle", 1000), backend); /* not sleeping: cancelled, and the same connection */
    t0 = now_ms();
    expect(port, "GET", "/todos", NULL, 200, "[]");
    CHECK(now_ms() - t0 < 2500); /* not queued behind the 5 s statement */
    CHECK_EQ_INT(stop_kid(pid), 0);
    /* the client leaves: a reset (a FIN is a half-close, which the server
     * still answers unless the route sets cancel_on_close) */
    pid = start_todo(pg.dir, &port, ARGS("--pg", pg.conninfo, "--pool", "1", "--debug"));
    REQUIRE((backend = wait_backend(&pg, "idle", 3000)) > 0);
    c = cli_open(port);
    CHECK_EQ_INT(cli_sends(c, "GET /debug/sleep/5000 HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    CHECK_EQ_INT(wait_backend(&pg, "active", 3000), backend); /* it sleeps on the server */
    cli_reset(c);
    cli_close(c);
    t0 = now_ms();
    after = wait_backend(&pg, "idle", 2000);
    CHECK_EQ_INT(after, backend);
    CHECK(now_ms() - t0 < 2000); /* well before the 5 s sleep would end */
    t0 = now_ms();
    expect(port, "POST", "/todos", "{\"title\": \"after the cancel\"}", 201, NULL);
    expect(port, "GET", "/todos", NULL, 200, "[{\"id\":1,\"title\":\"after the cancel\",\"done\":false}]");
    CHECK(now_ms() - t0 < 1000);
    CHECK_EQ_INT(wait_backend(&pg, "idle", 1000), backend);
    CHECK_EQ_INT(stop_kid(pid), 0);
    pg_stop(&pg);
}

TEST(todo_two_processes_share_a_cache_in_redis) {
    char dir[64], db[128], redis[32], out[64];
    const char *missing = todo_missing("redis");
    int rport, a, b;
    pid_t rpid, pa, pb;
    long long qa, qb;
    if (missing) {
        char why[96];
        snprintf(why, sizeof why, "%s not installed", missing);
        SKIP(why);
    }
    REQUIRE(make_temp_dir(dir, sizeof dir) == 0);
    if (!(rpid = redis_start(dir, &rport))) SKIP("redis-server not installed");
    snprintf(redis, sizeof redis, "127.0.0.1:%d", rport);
    snprintf(db, sizeof db, "%s/shared.db", dir);
    pa = start_todo(dir, &a, ARGS("--db", db, "--redis", redis, "--cache-ttl", "60"));
    pb = start_todo(dir, &b, ARGS("--db", db, "--redis", redis, "--cache-ttl", "60"));
    expect(a, "POST", "/todos", "{\"title\": \"one\"}", 201, NULL);
    expect(b, "GET", "/todos", NULL, 200, "[{\"id\":1,\"title\":\"one\",\"done\":false}]");
    CHECK_EQ_INT(redis_cmd(rport, "EXISTS todo:list", out, sizeof out), 0);
    CHECK_EQ_INT(strcmp(out, ":1"), 0); /* the list is in Redis, under the namespace */
    /* A reads what B cached: no query of its own */
    qa = stat_of(a, "db_queries");
    expect(a, "GET", "/todos", NULL, 200, "[{\"id\":1,\"title\":\"one\",\"done\":false}]");
    CHECK_EQ_INT(stat_of(a, "db_queries"), qa);
    CHECK_EQ_INT(stat_of(a, "cache_hits"), 1);
    /* a write through A invalidates B's cached list */
    qb = stat_of(b, "db_queries");
    expect(a, "POST", "/todos", "{\"title\": \"two\"}", 201, NULL);
    concurrent_gets(b, "/todos", 100, "{\"id\":2,\"title\":\"two\",\"done\":false}");
    CHECK_EQ_INT(stat_of(b, "db_queries"), qb + 1); /* single-flight in B, over Redis */
    /* and through B, A's cached item */
    expect(a, "GET", "/todos/1", NULL, 200, "{\"id\":1,\"title\":\"one\",\"done\":false}");
    expect(b, "PUT", "/todos/1", "{\"done\": true}", 200, NULL);
    expect(a, "GET", "/todos/1", NULL, 200, "{\"id\":1,\"title\":\"one\",\"done\":true}");
    expect(b, "DELETE", "/todos/2", NULL, 204, NULL);
    expect(a, "GET", "/todos", NULL, 200, "[{\"id\":1,\"title\":\"one\",\"done\":true}]");
    CHECK_EQ_INT(stop_kid(pb), 0);
    /* Redis gone: the cache misses, and reads go to the database */
    CHECK_EQ_INT(stop_kid(rpid), 0);
    qa = stat_of(a, "db_queries");
    expect(a, "GET", "/todos", NULL, 200, "[{\"id\":1,\"title\":\"one\",\"done\":true}]");
    expect(a, "POST", "/todos", "{\"title\": \"three\"}", 201, NULL);
    expect(a, "GET", "/todos", NULL, 200,
           "[{\"id\":1,\"title\":\"one\",\"done\":true},{\"id\":3,\"title\":\"three\",\"done\":false}]");
    CHECK_EQ_INT(stat_of(a, "db_queries"), qa + 3);
    CHECK_EQ_INT(stop_kid(pa), 0);
    /* and a todo started without it starts all the same */
    pa = start_todo(dir, &a, ARGS("--db", db, "--redis", redis));
    expect(a, "GET", "/todos/3", NULL, 200, "{\"id\":3,\"title\":\"three\",\"done\":false}");
    CHECK_EQ_INT(stop_kid(pa), 0);
}

/* A listener that never accepts: the kernel completes the handshake and
 * takes the request, and no answer ever comes. */
static int stalling_listener(int *port) {
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 16) == 0);
    REQUIRE(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* aggregator with args; the pid, *port set. */
static pid_t start_aggregator(int *port, char **ups, int n, const char *timeout) {
    char *argv[32];
    int k = 0, i;
    watch_cleanup();
    argv[k++] = (char *)"examples/aggregator";
    argv[k++] = (char *)"--port";
    argv[k++] = (char *)"0";
    argv[k++] = (char *)"--timeout";
    argv[k++] = (char *)timeout;
    for (i = 0; i < n; i++) {
        argv[k++] = (char *)"--upstream";
        argv[k++] = ups[i];
    }
    argv[k] = NULL;
    return start_server(argv, NULL, port);
}

TEST(aggregator_settles_every_upstream_within_its_timeout) {
    char u[5][64], *ups[5], want[160], *argv[] = {(char *)"examples/httpbin", (char *)"--port", (char *)"0", NULL};
    int hb, stall_port, stall_fd, refused = free_port(), agg, i;
    pid_t hpid, apid;
    uint64_t t0;
    long long elapsed;
    response r;
    watch_cleanup();
    hpid = start_server(argv, NULL, &hb);
    REQUIRE(hb > 0);
    stall_fd = stalling_listener(&stall_port);
    snprintf(u[0], sizeof u[0], "http://127.0.0.1:%d/", hb);
    snprintf(u[1], sizeof u[1], "http://127.0.0.1:%d/never", stall_port);
    snprintf(u[2], sizeof u[2], "http://127.0.0.1:%d/", refused);
    snprintf(u[3], sizeof u[3], "http://127.0.0.1:%d/status/503", hb);
    snprintf(u[4], sizeof u[4], "http://127.0.0.1:%d/delay/100", hb);
    for (i = 0; i < 5; i++) ups[i] = u[i];
    apid = start_aggregator(&agg, ups, 5, "600");
    REQUIRE(agg > 0);
    t0 = now_ms();
    CHECK_EQ_INT(http(agg, "GET", "/", NULL, &r), 200);
    CHECK(now_ms() - t0 < 3000); /* the stalled one costs its timeout, not more */
    CHECK(header_is(&r, "Content-Type", "application/json"));
    snprintf(want, sizeof want, "{\"url\":\"%s\",\"ok\":true,\"status\":200,\"body\":\"Hello, world!\"}", u[0]);
    CHECK(strstr(r.body, want) != NULL);
    snprintf(want, sizeof want, "{\"url\":\"%s\",\"ok\":false,\"error\":\"%s\"}", u[1], tn_strerror(TN_ETIMEOUT));
    CHECK(strstr(r.body, want) != NULL);
    snprintf(want, sizeof want, "{\"url\":\"%s\",\"ok\":false,\"error\":\"%s\"}", u[2], tn_strerror(TN_EREFUSED));
    CHECK(strstr(r.body, want) != NULL);
    snprintf(want, sizeof want, "{\"url\":\"%s\",\"ok\":false,\"status\":503,", u[3]);
    CHECK(strstr(r.body, want) != NULL);
    snprintf(want, sizeof want, "{\"url\":\"%s\",\"ok\":true,\"status\":200,\"body\":\"done\\n\"}", u[4]);
    CHECK(strstr(r.body, want) != NULL);
    CHECK(strstr(r.body, "\"partial\":true}") != NULL);
    CHECK(strncmp(r.body, "{\"upstreams\":[{\"url\":", 21) == 0);
    elapsed = json_num(r.body, "elapsed_ms");
    CHECK(elapsed >= 550 && elapsed < 2500); /* concurrent: about the timeout, not the sum */
    if (!strstr(r.body, "\"partial\":true")) fprintf(stderr, "    %s\n", r.body);
    resp_free(&r);
    CHECK_EQ_INT(stop_kid(apid), 0);
    /* none answers: 502 */
    apid = start_aggregator(&agg, ups + 1, 3, "300");
    CHECK_EQ_INT(http(agg, "GET", "/", NULL, &r), 502);
    CHECK(strstr(r.body, "\"partial\":true}") != NULL);
    resp_free(&r);
    CHECK_EQ_INT(stop_kid(apid), 0);
    /* all answer: not partial */
    ups[1] = u[4];
    apid = start_aggregator(&agg, ups, 2, "2000");
    CHECK_EQ_INT(http(agg, "GET", "/", NULL, &r), 200);
    CHECK(strstr(r.body, "\"partial\":false}") != NULL);
    resp_free(&r);
    CHECK_EQ_INT(stop_kid(apid), 0);
    close(stall_fd);
    CHECK_EQ_INT(stop_kid(hpid), 0);
}
