/* The server built with TN_HTTP_MINIMAL (make check-features builds this
 * file only in those configurations): what stays and what goes, as the
 * manual's list says. Exact routes, keep-alive and pipelining, HEAD, 404
 * and 405 stay; route patterns are TN_ENOTSUP; a chunked request body is a
 * 501 (the connection then closes); Expect: 100-continue gets no interim
 * answer; no ETag and no 304; bodies are not parsed into arguments. */
#include "http_util.h"

#ifndef TN_HTTP_MINIMAL
#error "tests/minimal.c is built with -DTN_HTTP_MINIMAL"
#endif

static void h_hello(tn_http_request *r, void *a) {
    (void)a;
    tn_http_respond(r, 200, "text/plain", "hi", 2);
}
static void h_echo(tn_http_request *r, void *a) {
    size_t n = 0;
    const char *b = tn_http_body(r, &n);
    const char *arg = tn_http_argument(r, "x", "none");
    char out[256];
    int len = snprintf(out, sizeof out, "%.*s|%s", (int)n, b, arg);
    (void)a;
    tn_http_respond(r, 200, "text/plain", out, (size_t)len);
}
static int g_pattern_rc;
static void routes(tn_http_server *srv) {
    REQUIRE(tn_http_route(srv, "GET", "/hello", h_hello, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "POST", "/echo", h_echo, NULL, NULL) == 0);
    g_pattern_rc = tn_http_route(srv, "GET", "/users/{id}", h_hello, NULL, NULL);
}

TEST(minimal_exact_routes_keep_alive_pipelining_head_404_405) {
    server *s = server_start(NULL, routes);
    client *c = cli_open(s->port);
    response r;
    int i;
    CHECK_EQ_INT(g_pattern_rc, TN_ENOTSUP);
    REQUIRE(cli_sends(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                         "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
                         "DELETE /hello HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    for (i = 0; i < 2; i++) {
        REQUIRE(read_response(c, &r, 0) == 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK(r.body_len == 2 && memcmp(r.body, "hi", 2) == 0);
        CHECK(resp_header(&r, "ETag") == NULL); /* no automatic ETag */
        resp_free(&r);
    }
    REQUIRE(read_response(c, &r, 1) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 405);
    resp_free(&r);
    /* the pattern was refused, so a path of its shape is no route */
    REQUIRE(roundtrip(c, "GET /users/7 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(minimal_bodies_chunked_is_501_expect_gets_no_100_forms_not_parsed) {
    server *s = server_start(NULL, routes);
    client *c = cli_open(s->port);
    response r;
    /* a Content-Length body, form-encoded: the bytes reach the handler,
     * not parsed into arguments */
    REQUIRE(roundtrip(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                         "Content-Length: 3\r\n\r\nx=1", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strcmp(r.body, "x=1|none") == 0);
    resp_free(&r);
    /* Expect: 100-continue with the body right behind: no interim line */
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strncmp(r.body, "ab|", 3) == 0);
    resp_free(&r);
    /* chunked: 501, and the connection closes (its framing is unknown to us) */
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 501);
    resp_free(&r);
    CHECK(cli_closed(c));
    cli_close(c);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
}
