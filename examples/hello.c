/* hello: the smallest tornado.h web server.   make run -> http://127.0.0.1:8888
 *   hello [--port 8888] [--workers N]   (N processes, one SO_REUSEPORT socket each) */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

static void hello(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_respond(req, 200, "text/plain", "Hello, world!", 13);
}

/* Workers 1..n-1 are forked children; the parent is worker 0. A child
 * gets SIGTERM when the parent exits (Linux), so stopping the parent stops
 * them all, as with nginx's master. */
static void spawn_workers(int n) {
    pid_t parent = getpid();
    int i;
    for (i = 1; i < n; i++) {
        pid_t p = fork();
        if (p < 0) {
            perror("fork");
            return;
        }
        if (p == 0) {
#ifdef __linux__
            prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
            if (getppid() != parent) _exit(0); /* it is already gone */
            return;
        }
    }
}

int main(int argc, char **argv) {
    tn_loop *loop;
    tn_http_server *srv;
    tn_http_server_opts opts = {0};
    int port = 8888, workers = 1, i, rc;
    for (i = 1; i < argc; i++) {
        const char *v = argv[i];
        int *into = &port, max = 65535;
        long n;
        char *end;
        if ((strcmp(v, "--port") == 0 || strcmp(v, "--workers") == 0) && i + 1 < argc) {
            if (v[2] == 'w') {
                into = &workers;
                max = 1024;
            }
            v = argv[++i];
        } else if (v[0] == '-') { /* "hello 8080" is a port; any other option is a mistake */
            v = "";
        }
        n = strtol(v, &end, 10);
        if (!*v || *end || n < (into == &port ? 0 : 1) || n > max) {
            fprintf(stderr, "usage: hello [--port 0-65535] [--workers 1-1024]\n");
            return 2;
        }
        *into = (int)n;
    }
    opts.reuseport = workers > 1;
    spawn_workers(workers);
    if (tn_loop_new(&loop, NULL) || tn_http_server_new(loop, &opts, &srv)) return 1;
    tn_http_route(srv, "GET", "/", hello, NULL, NULL);
    if ((rc = tn_http_listen(srv, "127.0.0.1", port)) != 0) {
        fprintf(stderr, "hello: port %d: %s\n", port, tn_strerror(rc));
        return 1;
    }
    tn_loop_run(loop);
    tn_http_server_free(srv);
    tn_loop_free(loop);
    return 0;
}
