/* The README's coroutine example, verbatim (tests/test_examples.c builds
 * and runs it against examples/httpbin). Keep the two in sync. */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"
#include <stdio.h>
#ifndef BASE
#define BASE "http://127.0.0.1:8888" /* where examples/httpbin listens */
#endif

struct three { tn_co co; tn_http_client *client; tn_future *f[3]; void *resp[3]; int i; };

static int fetch_three(tn_co *co) {
    struct three *s = (struct three *)co;            /* the frame: survives awaits */
    static const char *urls[3] = {BASE "/", BASE "/headers", BASE "/delay/100"};
    TN_BEGIN(co);
    for (s->i = 0; s->i < 3; s->i++)                 /* start all three at once... */
        s->f[s->i] = tn_http_fetch(s->client, urls[s->i], NULL);
    /* ...and wait for all of them, but no longer than two seconds */
    TN_AWAIT(co, tn_with_timeout(co->loop, tn_all(co->loop, s->f, 3, s->resp), 2000));
    if (co->err) TN_FAIL(co, co->err);               /* co->err: 0 or the error */
    for (s->i = 0; s->i < 3; s->i++) {
        tn_http_response *r = s->resp[s->i];         /* yours now */
        printf("%s -> %d, %zu bytes\n", urls[s->i], r->status, r->body_len);
        tn_http_response_free(r);
    }
    TN_END(co);                                      /* resolves the spawned future */
}

int main(void) {
    tn_loop *loop;
    struct three s = {0};
    int err;
    tn_loop_new(&loop, NULL);
    tn_http_client_new(loop, NULL, &s.client);
    err = tn_run_sync(loop, tn_spawn(loop, &s.co, fetch_three), 0, NULL);
    if (err) fprintf(stderr, "failed: %s\n", tn_strerror(err));
    tn_http_client_free(s.client);
    tn_loop_free(loop);
    return err != 0;
}
