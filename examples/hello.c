/* hello: the smallest tornado.h web server.  make run  ->  http://127.0.0.1:8888 */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"
#include <stdio.h>
#include <stdlib.h>

static void hello(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_respond(req, 200, "text/plain; charset=utf-8", "Hello, world!", 13);
}

int main(int argc, char **argv) {
    tn_loop *loop;
    tn_http_server *srv;
    int port = argc > 1 ? atoi(argv[1]) : 8888, rc;
    if (tn_loop_new(&loop, NULL) || tn_http_server_new(loop, NULL, &srv)) return 1;
    tn_http_route(srv, "GET", "/", hello, NULL, NULL);
    if ((rc = tn_http_listen(srv, "127.0.0.1", port)) != 0) {
        fprintf(stderr, "hello: listen on port %d: %s\n", port, tn_strerror(rc));
        return 1;
    }
    tn_loop_run(loop);
    tn_http_server_free(srv);
    tn_loop_free(loop);
    return 0;
}
