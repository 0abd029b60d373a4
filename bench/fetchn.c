/* bench/fetchn.c: N sequential fetches on one tn_http_client (bench/counts.sh, figure 3).
 *
 *   fetchn URL N     e.g. fetchn http://127.0.0.1:PORT/ 2000
 *
 * Each fetch is tn_http_fetch + tn_run_sync (20 s bound) + tn_http_response_free, one at a
 * time, so after the first the client reuses its pooled keep-alive connection: the figure
 * counts.sh derives, (run(N2) - run(N1)) / (N2 - N1), is the cost of one fetch on a warm
 * client (allocations from memcheck, instructions from callgrind). Exits 0 when every fetch
 * answered 200. */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    tn_loop *loop;
    tn_http_client *c;
    long n, i, ok = 0;
    if (argc != 3 || (n = atol(argv[2])) <= 0) {
        fprintf(stderr, "usage: fetchn URL N\n");
        return 2;
    }
    if (tn_loop_new(&loop, NULL) || tn_http_client_new(loop, NULL, &c)) return 1;
    for (i = 0; i < n; i++) {
        void *v = NULL;
        int rc = tn_run_sync(loop, tn_http_fetch(c, argv[1], NULL), 20000, &v);
        if (rc) {
            fprintf(stderr, "fetchn: fetch %ld: %s\n", i, tn_strerror(rc));
            break;
        }
        ok += ((tn_http_response *)v)->status == 200;
        tn_http_response_free(v);
    }
    tn_http_client_free(c);
    tn_loop_free(loop);
    printf("fetchn n=%ld ok=%ld\n", n, ok);
    return ok == n ? 0 : 1;
}
