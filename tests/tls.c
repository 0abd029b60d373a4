/* TLS (tn_tls_*, tn_http_listen_tls, https:// in the client, tn_stream_start_tls)
 * against real peers. Built twice by `make test`: tests/tn_tests-tls-openssl
 * (-DTN_TLS_OPENSSL) and tests/tn_tests-tls-mbedtls (-DTN_TLS_MBEDTLS); a
 * library that is not installed builds this file with TLS_MISSING set, a
 * single test that is skipped (a failure under CI=true).
 *
 * The certificates are made at the start of the run by the openssl command
 * (a CA, a server certificate for localhost and 127.0.0.1, and one each for
 * SNI, reload, an address only, a name only, an expired one, one from a CA
 * nobody trusts), in a directory removed at exit.
 *
 * Our server (on a loop thread, tests/http_util.h) is checked with curl and
 * Python's ssl + http.client (keep-alive, pipelining, chunked, a 1 MiB echo,
 * an 8 MiB file by reference, SNI, reload, TLS 1.2 and 1.3), and with
 * hostile raw sockets (plain HTTP, garbage, stalled handshakes, with the
 * memory they cost measured). Our client is checked against openssl
 * s_server, nginx, Python Tornado and our own server: every verification
 * failure, versions, redirects between http and https, resumption, a
 * handshake that never ends. */
#include "http_util.h"
#include "proc_util.h"

#ifdef TLS_MISSING
TEST(tls_backend_installed) { SKIP(TLS_MISSING " not installed"); }
#else

#include <sys/resource.h>
#include <sys/stat.h>

#ifdef TN_TLS_MBEDTLS
#define HAVE_TLS13 0 /* mbedTLS 2.28 (Debian 12) speaks TLS 1.2 only */
#else
#define HAVE_TLS13 1
#endif

/* ------------------------------------------------------------------ */
/* Certificates                                                        */
/* ------------------------------------------------------------------ */

static char fx_dir[64];
static pid_t fx_owner;

static void fx_cleanup(void) {
    if (getpid() == fx_owner && fx_dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", fx_dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", fx_dir);
    }
}

/* The directory is made (empty) before main; the first test that needs
 * certificates makes them, and every later test (a child of the same
 * runner) finds them there. */
__attribute__((constructor)) static void fx_init(void) {
    strcpy(fx_dir, "/tmp/tn_tls_fx_XXXXXX");
    if (!mkdtemp(fx_dir)) {
        fx_dir[0] = 0;
        return;
    }
    fx_owner = getpid();
    atexit(fx_cleanup);
}

static const char fx_script[] =
    "set -e\n"
    "cd \"$1\"\n"
    "key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$1.key\" 2>/dev/null; }\n"
    "ca() { key $1; openssl req -x509 -new -key $1.key -out $1.crt -days 30 -subj \"/CN=$2\" 2>/dev/null; }\n"
    "csr() { key $1; openssl req -new -key $1.key -out $1.csr -subj \"/CN=$2\" -addext \"subjectAltName=$3\" 2>/dev/null; }\n"
    "leaf() { csr $1 $2 $3; openssl x509 -req -in $1.csr -CA ${4:-ca}.crt -CAkey ${4:-ca}.key -CAcreateserial \\\n"
    "    -days 30 -copy_extensions copy -out $1.crt 2>/dev/null; }\n"
    "ca ca 'tn test CA'\n"
    "leaf srv localhost DNS:localhost,IP:127.0.0.1\n"
    "leaf srv2 reloaded DNS:localhost,IP:127.0.0.1\n"
    "leaf other other.test DNS:other.test\n"
    "leaf ipo ip-only IP:127.0.0.1\n"
    "leaf dnso dns-only DNS:localhost\n"
    "ca rogue 'rogue CA'\n"
    "leaf self localhost DNS:localhost,IP:127.0.0.1 rogue\n"
    /* dates in the past need `openssl ca` */
    "csr exp localhost DNS:localhost,IP:127.0.0.1\n"
    "printf '[ca]\\ndefault_ca=x\\n[x]\\ndir=.\\ndatabase=index.txt\\nnew_certs_dir=.\\nserial=serial\\n"
    "default_md=sha256\\npolicy=p\\ncopy_extensions=copy\\nunique_subject=no\\n[p]\\ncommonName=supplied\\n' >ca.cnf\n"
    ": >index.txt; echo 1000 >serial\n"
    "openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -notext -startdate 20200101000000Z \\\n"
    "    -enddate 20200201000000Z -in exp.csr -out exp.crt 2>/dev/null\n"
    "touch done\n";

/* A path in the certificate directory (8 rotating buffers). */
static const char *fx(const char *name) {
    static char bufs[8][128];
    static int next;
    char *b = bufs[next++ & 7];
    snprintf(b, 128, "%s/%s", fx_dir, name);
    return b;
}

/* 0 when the openssl command is missing (the caller skips). */
static int fx_ready(void) {
    char script[128], cmd[256];
    FILE *f;
    int st;
    REQUIRE(fx_dir[0]);
    if (access(fx("done"), F_OK) == 0) return 1;
    if (!have_tool("openssl")) return 0;
    snprintf(script, sizeof script, "%s/make.sh", fx_dir);
    f = fopen(script, "w");
    REQUIRE(f != NULL);
    fputs(fx_script, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "sh %s %s", script, fx_dir);
    st = system(cmd);
    if (st != 0) fprintf(stderr, "    the certificate script failed (%d)\n", st);
    REQUIRE(st == 0 && access(fx("done"), F_OK) == 0);
    return 1;
}
#define NEED_CERTS() \
    do { \
        if (!fx_ready()) SKIP("openssl not installed"); \
    } while (0)

static tn_tls_ctx *server_ctx(const char *name) {
    tn_tls_opts o;
    tn_tls_ctx *c = NULL;
    char crt[64], key[64];
    memset(&o, 0, sizeof o);
    snprintf(crt, sizeof crt, "%s.crt", name);
    snprintf(key, sizeof key, "%s.key", name);
    o.cert_file = fx(crt);
    o.key_file = fx(key);
    REQUIRE(tn_tls_server_ctx_new(&o, &c) == 0);
    return c;
}

/* A client context trusting our CA (max_version 0: the best there is). */
static tn_tls_ctx *client_ctx(int max_version) {
    tn_tls_opts o;
    tn_tls_ctx *c = NULL;
    memset(&o, 0, sizeof o);
    o.ca_file = fx("ca.crt");
    o.max_version = max_version;
    REQUIRE(tn_tls_client_ctx_new(&o, &c) == 0);
    return c;
}

/* ------------------------------------------------------------------ */
/* Our server                                                          */
/* ------------------------------------------------------------------ */

static int g_tls_port, g_plain_port; /* for the redirect handlers */
static char g_file[128];             /* the file /file sends */

static void h_hello(tn_http_request *r, void *a) {
    (void)a;
    tn_http_respond(r, 200, "text/plain", "hello over tls\n", 15);
}
/* a copy by reference: tn_http_respond copies at most TN_HTTP_WRITE_HIGH */
static void h_echo(tn_http_request *r, void *a) {
    size_t n = 0;
    const char *b = tn_http_body(r, &n);
    char *copy = (char *)malloc(n + 1);
    (void)a;
    if (!copy) {
        tn_http_send_error(r, 503);
        return;
    }
    memcpy(copy, b, n);
    tn_http_respond_ref(r, 200, "application/octet-stream", copy, n, free, copy);
}
/* 64 chunks of 1000 bytes, each its own write */
static void h_chunks(tn_http_request *r, void *a) {
    char buf[1000];
    int i;
    (void)a;
    tn_http_begin(r, 200, "text/plain", -1);
    for (i = 0; i < 64; i++) {
        memset(buf, 'a' + i % 26, sizeof buf);
        tn_http_write(r, buf, sizeof buf);
    }
    tn_http_finish(r);
}
/* a file by reference: over TLS it cannot go by sendfile */
static void h_file(tn_http_request *r, void *a) {
    int fd = open(g_file, O_RDONLY);
    struct stat st;
    (void)a;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0) close(fd);
        tn_http_send_error(r, 500);
        return;
    }
    tn_http_begin(r, 200, "application/octet-stream", (int64_t)st.st_size);
    tn_http_write_file(r, fd, 0, (uint64_t)st.st_size);
    tn_http_finish(r);
}
static void h_to_https(tn_http_request *r, void *a) {
    char url[128];
    (void)a;
    snprintf(url, sizeof url, "https://localhost:%d/hello", GET(g_tls_port));
    tn_http_redirect(r, url, 302);
}
static void h_to_http(tn_http_request *r, void *a) {
    char url[128];
    (void)a;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/plain", GET(g_plain_port));
    tn_http_redirect(r, url, 302);
}
static void h_plain(tn_http_request *r, void *a) {
    (void)a;
    tn_http_respond(r, 200, "text/plain", "plain again\n", 12);
}

static void routes(tn_http_server *srv) {
    tn_http_route_opts big;
    memset(&big, 0, sizeof big);
    big.max_body_bytes = 8u << 20;
    REQUIRE(tn_http_route(srv, "GET", "/hello", h_hello, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "POST", "/echo", h_echo, NULL, &big) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/chunks", h_chunks, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/file", h_file, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/to-https", h_to_https, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/to-http", h_to_http, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/plain", h_plain, NULL, NULL) == 0);
}

struct listen_arg {
    tn_tls_ctx *ctx;
    int port, rc;
};
static void do_listen_tls(server *s, void *arg) {
    struct listen_arg *a = (struct listen_arg *)arg;
    a->rc = tn_http_listen_tls(s->srv, "127.0.0.1", 0, a->ctx);
    a->port = tn_http_server_port(s->srv);
}
/* Adds a TLS listener with ctx (the server takes a reference); its port. */
static int listen_tls(server *s, tn_tls_ctx *ctx) {
    struct listen_arg a;
    a.ctx = ctx;
    a.port = 0;
    a.rc = -1;
    on_loop(s, do_listen_tls, &a);
    REQUIRE(a.rc == 0 && a.port > 0);
    return a.port;
}

/* A server with a plain listener (s->port) and a TLS one with srv.crt. */
static server *tls_server(const tn_http_server_opts *o, int *tls_port) {
    server *s = server_start(o, routes);
    tn_tls_ctx *c = server_ctx("srv");
    *tls_port = listen_tls(s, c);
    tn_tls_ctx_free(c); /* the listener holds its reference */
    SET(g_tls_port, *tls_port);
    SET(g_plain_port, s->port);
    return s;
}

/* The test's own loop with a client (ctx NULL: the default, system store). */
typedef struct cli {
    tn_loop *loop;
    tn_http_client *c;
} cli;

static void cli_new(cli *k, tn_tls_ctx *ctx) {
    tn_http_client_opts o;
    memset(&o, 0, sizeof o);
    o.tls = ctx;
    o.connect_timeout_ms = 5000;
    REQUIRE(tn_loop_new(&k->loop, NULL) == 0);
    REQUIRE(tn_http_client_new(k->loop, &o, &k->c) == 0);
    if (ctx) tn_tls_ctx_free(ctx); /* the client holds its reference */
}
static void cli_free(cli *k) {
    tn_loop_stats st;
    tn_http_client_free(k->c);
    tn_loop_get_stats(k->loop, &st);
    CHECK_EQ_INT(st.handlers, 0);
    CHECK_EQ_INT(st.timers, 0);
    CHECK_EQ_INT(st.futures, 0);
    tn_loop_free(k->loop);
}
static int fetch(cli *k, const char *url, const tn_http_fetch_opts *o, tn_http_response **out) {
    void *v = NULL;
    int rc = tn_run_sync(k->loop, tn_http_fetch(k->c, url, o), 20000, &v);
    *out = (tn_http_response *)v;
    if (rc) fprintf(stderr, "    fetch %s: %s\n", url, tn_strerror(rc));
    return rc;
}
/* The error of fetching url (0: a response came, freed). */
static int fetch_err(cli *k, const char *url) {
    tn_http_response *r = NULL;
    int rc = fetch(k, url, NULL, &r);
    if (r) tn_http_response_free(r);
    return rc;
}
static void fetch_body(cli *k, const char *url, int status, const char *body) {
    tn_http_response *r = NULL;
    int rc = fetch(k, url, NULL, &r);
    CHECK_EQ_INT(rc, 0);
    if (rc) return;
    CHECK_EQ_INT(r->status, status);
    CHECK(r->body && strcmp(r->body, body) == 0);
    if (!r->body || strcmp(r->body, body) != 0) fprintf(stderr, "    %s: \"%s\"\n", url, r->body ? r->body : "");
    tn_http_response_free(r);
}

/* ------------------------------------------------------------------ */
/* Our server against curl and Python                                  */
/* ------------------------------------------------------------------ */

TEST(tls_server_with_curl) {
    char cmd[1024], *out, big[128];
    server *s;
    int port, st;
    NEED_CERTS();
    if (!have_tool("curl")) SKIP("curl not installed");
    s = tls_server(NULL, &port);
    /* two transfers on one connection (num_connects 1, then 0), by name
     * and by address */
    snprintf(cmd, sizeof cmd,
             "curl -sS --max-time 10 --cacert %s -w '|%%{http_code} %%{num_connects}\\n' "
             "https://localhost:%d/hello https://localhost:%d/hello https://127.0.0.1:%d/hello",
             fx("ca.crt"), port, port, port);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    CHECK(strstr(out, "hello over tls\n|200 1\nhello over tls\n|200 0\nhello over tls\n|200 1\n") != NULL);
    free(out);
    if (HAVE_TLS13) { /* both versions, chosen by the client */
        snprintf(cmd, sizeof cmd,
                 "curl -sS --max-time 10 --cacert %s --tls-max 1.2 -w '|%%{http_code}\\n' https://localhost:%d/hello"
                 " && curl -sS --max-time 10 --cacert %s --tlsv1.3 -w '|%%{http_code}\\n' https://localhost:%d/hello",
                 fx("ca.crt"), port, fx("ca.crt"), port);
        out = run(cmd, &st);
        CHECK_EQ_INT(st, 0);
        CHECK_EQ_INT(count(out, "hello over tls\n|200\n"), 2);
        free(out);
    }
    /* 8 MiB from a file by reference, compared byte for byte */
    snprintf(g_file, sizeof g_file, "%s/big.bin", fx_dir);
    snprintf(big, sizeof big, "%s/got.bin", fx_dir);
    snprintf(cmd, sizeof cmd, "head -c 8388608 /dev/urandom > %s", g_file);
    REQUIRE(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "curl -sS --max-time 20 --cacert %s -o %s https://localhost:%d/file && cmp %s %s && echo same",
             fx("ca.crt"), big, port, g_file, big);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    CHECK(strstr(out, "same") != NULL);
    free(out);
    unlink(g_file);
    unlink(big);
    server_stop(s);
}

/* keep-alive, a 1 MiB echo, a chunked response, pipelining on one TLS
 * connection, the version; then SNI */
static const char py_client[] =
    "import socket, ssl, sys, http.client\n"
    "port, ca, maxv = int(sys.argv[1]), sys.argv[2], sys.argv[3]\n"
    "ctx = ssl.create_default_context(cafile=ca)\n"
    "if maxv == '12': ctx.maximum_version = ssl.TLSVersion.TLSv1_2\n"
    "if maxv == '13': ctx.minimum_version = ssl.TLSVersion.TLSv1_3\n"
    "c = http.client.HTTPSConnection('localhost', port, context=ctx, timeout=10)\n"
    "c.request('GET', '/hello'); r = c.getresponse(); print('hello', r.status, r.read().decode().strip())\n"
    "body = bytes(range(256)) * 4096\n"
    "c.request('POST', '/echo', body=body); r = c.getresponse(); d = r.read()\n"
    "print('echo', r.status, len(d), d == body)\n"
    "c.request('GET', '/chunks'); r = c.getresponse(); d = r.read()\n"
    "print('chunks', r.status, r.getheader('Transfer-Encoding'), len(d))\n"
    "print('version', c.sock.version())\n"
    "sock = c.sock; c.close()\n"
    "s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=10), server_hostname='localhost')\n"
    "s.sendall(b'GET /hello HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' * 3 + b'GET /hello HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n"
    "d = b''\n"
    "while True:\n"
    "    b = s.recv(65536)\n"
    "    if not b: break\n"
    "    d += b\n"
    "print('pipelined', d.count(b'HTTP/1.1 200 OK'), d.count(b'hello over tls'))\n"
    "for name in ('other.test', 'localhost'):\n"
    "    s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=10), server_hostname=name)\n"
    "    cn = [v for ((k, v),) in s.getpeercert()['subject'] if k == 'commonName'][0]\n"
    "    print('sni', name, cn); s.close()\n";

static char *python(const char *script, const char *args, int *st) {
    char path[128], cmd[512];
    snprintf(path, sizeof path, "%s/client-%d.py", fx_dir, (int)getpid());
    write_file(fx_dir, path + strlen(fx_dir) + 1, script);
    snprintf(cmd, sizeof cmd, "timeout 60 /usr/bin/python3 %s %s 2>&1", path, args);
    return run(cmd, st);
}

static void py_checks(int port, const char *maxv, const char *want_version) {
    char args[256], *out;
    int st;
    snprintf(args, sizeof args, "%d %s %s", port, fx("ca.crt"), maxv);
    out = python(py_client, args, &st);
    CHECK_EQ_INT(st, 0);
    CHECK(strstr(out, "hello 200 hello over tls\n") != NULL);
    CHECK(strstr(out, "echo 200 1048576 True\n") != NULL);
    CHECK(strstr(out, "chunks 200 chunked 64000\n") != NULL);
    CHECK(strstr(out, want_version) != NULL);
    CHECK(strstr(out, "pipelined 4 4\n") != NULL);
    CHECK(strstr(out, "sni other.test other.test\n") != NULL);
    CHECK(strstr(out, "sni localhost localhost\n") != NULL);
    if (st != 0 || !strstr(out, "sni localhost")) fprintf(stderr, "    python said:\n%s\n", out);
    free(out);
}

TEST(tls_server_with_python) {
    server *s;
    int port;
    NEED_CERTS();
    if (access("/usr/bin/python3", X_OK) != 0) SKIP("python3 not installed");
    s = tls_server(NULL, &port);
    /* SNI: other.test gets its own certificate */
    {
        tn_tls_ctx *c = NULL;
        struct listen_arg a;
        tn_tls_opts o;
        memset(&o, 0, sizeof o);
        o.cert_file = fx("srv.crt");
        o.key_file = fx("srv.key");
        REQUIRE(tn_tls_server_ctx_new(&o, &c) == 0);
        CHECK_EQ_INT(tn_tls_ctx_add_sni(c, "other.test", fx("other.crt"), fx("other.key")), 0);
        CHECK_EQ_INT(tn_tls_ctx_add_sni(c, "bad.test", fx("other.crt"), fx("srv.key")), TN_EINVAL);
        CHECK_EQ_INT(tn_tls_ctx_add_sni(c, "none.test", fx("nope.crt"), fx("nope.key")), TN_EINVAL);
        a.ctx = c;
        on_loop(s, do_listen_tls, &a);
        REQUIRE(a.rc == 0);
        port = a.port;
        tn_tls_ctx_free(c);
    }
    py_checks(port, "12", "version TLSv1.2\n");
    if (HAVE_TLS13) py_checks(port, "13", "version TLSv1.3\n");
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* examples/httpbin over HTTPS: curl, Python, examples/fetch and crawler */
/* ------------------------------------------------------------------ */

/* Starts examples/httpbin with the test certificate; *http and *https get
 * its ports. 0 if it was built without TLS (exit status 2, said so). */
static pid_t httpbin_tls(int *http, int *https) {
    char *argv[10], buf[512];
    size_t len = 0;
    pid_t pid;
    int fd, i;
    REQUIRE(access("examples/httpbin", X_OK) == 0); /* make test builds the examples first */
    argv[0] = (char *)"examples/httpbin";
    argv[1] = (char *)"--port";
    argv[2] = (char *)"0";
    argv[3] = (char *)"--tls-cert";
    argv[4] = (char *)fx("srv.crt");
    argv[5] = (char *)"--tls-key";
    argv[6] = (char *)fx("srv.key");
    argv[7] = NULL;
    pid = spawn(argv, &fd, NULL);
    buf[0] = 0;
    for (i = 0; i < 200 && len + 1 < sizeof buf; i++) { /* two lines, within 10 s */
        struct pollfd p;
        ssize_t n;
        char *https_line = strstr(buf, "https://");
        if (https_line && strchr(https_line, '\n')) break;
        p.fd = fd;
        p.events = POLLIN;
        if (poll(&p, 1, 50) <= 0) continue;
        if ((n = read(fd, buf + len, sizeof buf - 1 - len)) <= 0) break;
        len += (size_t)n;
        buf[len] = 0;
    }
    close(fd);
    if (sscanf(buf, "listening on http://127.0.0.1:%d\nlistening on https://127.0.0.1:%d", http, https) != 2) {
        int st = 0;
        stop_child(pid);
        if (wait_child(pid, 1000, &st) == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 2) return 0;
        fprintf(stderr, "    httpbin said: %s\n", buf);
        REQUIRE(!"httpbin did not start over TLS");
    }
    return pid;
}

static const char py_httpbin[] =
    "import http.client, json, ssl, sys\n"
    "ctx = ssl.create_default_context(cafile=sys.argv[2])\n"
    "c = http.client.HTTPSConnection('localhost', int(sys.argv[1]), context=ctx, timeout=10)\n"
    "c.request('POST', '/post', body=json.dumps({'a': [1, 2]}), headers={'Content-Type': 'application/json'})\n"
    "r = c.getresponse(); d = json.loads(r.read())\n"
    "print('post', r.status, d['json'], d['url'])\n"
    "c.request('GET', '/stream/500'); r = c.getresponse(); d = r.read()\n"
    "print('stream', r.status, d.count(b'\\n'))\n";

TEST(tls_httpbin_over_https_with_curl_python_fetch_and_crawler) {
    char cmd[1024], args[256], *out;
    int http, https, st;
    pid_t pid;
    NEED_CERTS();
    if (!have_tool("curl")) SKIP("curl not installed");
    if (access("/usr/bin/python3", X_OK) != 0) SKIP("python3 not installed");
    if (!(pid = httpbin_tls(&http, &https))) SKIP("libssl-dev not installed (examples/httpbin without TLS)");
    /* the same routes as over http; the url says https */
    snprintf(cmd, sizeof cmd, "curl -sS --max-time 10 --cacert %s https://localhost:%d/get", fx("ca.crt"), https);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    snprintf(args, sizeof args, "\"url\":\"https://localhost:%d/get\"", https);
    CHECK(strstr(out, args) != NULL);
    free(out);
    /* streaming both ways: a chunked upload to an on_body route, a
     * streamed response with backpressure, 10 MB from a coroutine */
    snprintf(cmd, sizeof cmd,
             "head -c 3000000 /dev/zero | curl -sS --max-time 20 --cacert %s -H 'Transfer-Encoding: chunked' "
             "-X POST -T - https://localhost:%d/upload && curl -sS --max-time 20 --cacert %s https://localhost:%d/stream/20000 "
             "| wc -l && curl -sS --max-time 20 --cacert %s -o /dev/null -w '%%{size_download}\\n' "
             "https://localhost:%d/bytes/10000000",
             fx("ca.crt"), https, fx("ca.crt"), https, fx("ca.crt"), https);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    CHECK(strstr(out, "length=3000000 ") != NULL);
    CHECK(strstr(out, "\n20000\n10000000\n") != NULL);
    if (!strstr(out, "\n20000\n10000000\n")) fprintf(stderr, "    curl said:\n%s\n", out);
    free(out);
    snprintf(args, sizeof args, "%d %s", https, fx("ca.crt"));
    out = python(py_httpbin, args, &st);
    CHECK_EQ_INT(st, 0);
    snprintf(cmd, sizeof cmd, "post 200 {'a': [1, 2]} https://localhost:%d/post\n", https);
    CHECK(strstr(out, cmd) != NULL);
    CHECK(strstr(out, "stream 200 500\n") != NULL);
    if (st || !strstr(out, "stream 200 500\n")) fprintf(stderr, "    python said:\n%s\n", out);
    free(out);
    /* our examples: fetch (verifying with --cacert, and failing without),
     * and the crawler over https */
    snprintf(cmd, sizeof cmd,
             "./examples/fetch --cacert %s https://localhost:%d/ && ! ./examples/fetch https://localhost:%d/ 2>&1 && "
             "./examples/fetch -k https://127.0.0.1:%d/ && ./examples/crawler --cacert %s https://localhost:%d/site/ | tail -1",
             fx("ca.crt"), https, https, https, fx("ca.crt"), https);
    out = run(cmd, &st);
    CHECK_EQ_INT(st, 0);
    CHECK(strncmp(out, "Hello, world!", 13) == 0);
    CHECK(strstr(out, "certificate not trusted") != NULL);
    CHECK(strstr(out, "crawled 41 URLs, 0 failed") != NULL);
    if (st) fprintf(stderr, "    said:\n%s\n", out);
    free(out);
    CHECK_EQ_INT(stop_child(pid), 0);
}

/* ------------------------------------------------------------------ */
/* Reload                                                              */
/* ------------------------------------------------------------------ */

static const char py_cn[] =
    "import socket, ssl, sys\n"
    "ctx = ssl.create_default_context(cafile=sys.argv[2])\n"
    "s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10), server_hostname='localhost')\n"
    "print('cn', [v for ((k, v),) in s.getpeercert()['subject'] if k == 'commonName'][0])\n";

static void copy_file(const char *from, const char *to) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s %s", from, to);
    REQUIRE(system(cmd) == 0);
}

struct reload_arg {
    tn_tls_ctx *ctx;
    int rc;
};
static void do_reload(server *s, void *arg) {
    struct reload_arg *a = (struct reload_arg *)arg;
    (void)s;
    a->rc = tn_tls_ctx_reload(a->ctx);
}

TEST(tls_server_reload_takes_new_certificates) {
    char crt[128], key[128], args[256], *out;
    server *s;
    tn_tls_ctx *c = NULL;
    tn_tls_opts o;
    struct reload_arg ra;
    cli k;
    tn_http_response *r;
    char url[128];
    int port, st;
    NEED_CERTS();
    if (access("/usr/bin/python3", X_OK) != 0) SKIP("python3 not installed");
    snprintf(crt, sizeof crt, "%s/cur-%d.crt", fx_dir, (int)getpid());
    snprintf(key, sizeof key, "%s/cur-%d.key", fx_dir, (int)getpid());
    copy_file(fx("srv.crt"), crt);
    copy_file(fx("srv.key"), key);
    memset(&o, 0, sizeof o);
    o.cert_file = crt;
    o.key_file = key;
    REQUIRE(tn_tls_server_ctx_new(&o, &c) == 0);
    s = server_start(NULL, routes);
    port = listen_tls(s, c);
    snprintf(args, sizeof args, "%d %s", port, fx("ca.crt"));
    out = python(py_cn, args, &st);
    CHECK(strstr(out, "cn localhost\n") != NULL);
    free(out);
    /* a keep-alive connection made before the reload */
    cli_new(&k, client_ctx(0));
    snprintf(url, sizeof url, "https://localhost:%d/hello", port);
    fetch_body(&k, url, 200, "hello over tls\n");
    copy_file(fx("srv2.crt"), crt);
    copy_file(fx("srv2.key"), key);
    ra.ctx = c;
    on_loop(s, do_reload, &ra);
    CHECK_EQ_INT(ra.rc, 0);
    out = python(py_cn, args, &st);
    CHECK(strstr(out, "cn reloaded\n") != NULL);
    free(out);
    /* the old connection goes on: no new connection, no new handshake */
    REQUIRE(fetch(&k, url, NULL, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK_EQ_INT(r->reused, 1);
    tn_http_response_free(r);
    /* a broken key: all or nothing, the last good ones stay */
    write_file(fx_dir, key + strlen(fx_dir) + 1, "not a key\n");
    on_loop(s, do_reload, &ra);
    CHECK_EQ_INT(ra.rc, TN_EINVAL);
    out = python(py_cn, args, &st);
    CHECK(strstr(out, "cn reloaded\n") != NULL);
    free(out);
    cli_free(&k);
    server_stop(s);
    tn_tls_ctx_free(c);
    unlink(crt);
    unlink(key);
}

/* ------------------------------------------------------------------ */
/* Hostile clients                                                     */
/* ------------------------------------------------------------------ */

/* Reads until EOF (1) or the socket's 5 s timeout (0); what came is in c. */
static int read_to_eof(client *c) {
    int rc;
    while ((rc = cli_fill(c)) > 0) {
        if (c->len > (1u << 20)) return 0;
    }
    return rc == 0;
}

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kib) == 1) break;
    fclose(f);
    return kib;
}

TEST(tls_server_plain_http_gets_400_and_garbage_is_cut) {
    static const unsigned char junk[] = {0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00};
    tn_http_server_opts o;
    server *s;
    client *c;
    int port;
    NEED_CERTS();
    memset(&o, 0, sizeof o);
    o.header_timeout_ms = 300;
    s = tls_server(&o, &port);
    /* plain HTTP to the TLS port: told so in plain HTTP, as nginx does */
    c = cli_open(port);
    REQUIRE(cli_sends(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
    CHECK(read_to_eof(c));
    CHECK(c->len > 12 && memcmp(c->buf, "HTTP/1.1 400", 12) == 0);
    CHECK(c->buf && strstr(c->buf, "HTTPS port") != NULL);
    cli_close(c);
    /* a record that is no handshake */
    c = cli_open(port);
    REQUIRE(cli_send(c, (const char *)junk, sizeof junk) == 0);
    CHECK(read_to_eof(c));
    CHECK(c->len == 0 || (unsigned char)c->buf[0] == 0x15); /* nothing, or an alert */
    cli_close(c);
    /* silence, and half a ClientHello: cut at header_timeout_ms */
    c = cli_open(port);
    CHECK(read_to_eof(c));
    cli_close(c);
    c = cli_open(port);
    REQUIRE(cli_send(c, (const char *)junk, 5) == 0);
    CHECK(read_to_eof(c));
    cli_close(c);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    /* still serving */
    {
        cli k;
        char url[128];
        cli_new(&k, client_ctx(0));
        snprintf(url, sizeof url, "https://localhost:%d/hello", port);
        fetch_body(&k, url, 200, "hello over tls\n");
        cli_free(&k);
    }
    server_stop(s);
}

/* TLS_STALL_N clients each start a handshake (a record header and part of
 * a ClientHello) and stall, three rounds. What they cost is the library's
 * state for a handshake in progress (the manual's figures: ~46 KiB with
 * OpenSSL 3.0, ~21 KiB with mbedTLS 2.28, printed here); the bound,
 * TLS_STALL_KIB each, leaves room for the allocator, which keeps freed
 * memory from the system (so RSS does not fall after a round: it must not
 * grow round after round either). Each round is cut by header_timeout_ms. */
#define TLS_STALL_N 300
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1 /* its quarantine keeps freed memory: RSS says nothing */
#else
#define UNDER_ASAN 0
#endif
#define TLS_STALL_KIB 96
TEST(tls_server_stalled_handshakes_are_bounded_and_cut) {
    static const unsigned char hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03};
    tn_http_server_opts o;
    server *s;
    client *cs[TLS_STALL_N];
    long before, during;
    int port, i, round;
    struct rlimit rl;
    NEED_CERTS();
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * TLS_STALL_N + 64) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    memset(&o, 0, sizeof o);
    o.header_timeout_ms = 1000;
    s = tls_server(&o, &port);
    { /* warm: the first handshake's one-time allocations */
        cli k;
        char url[128];
        cli_new(&k, client_ctx(0));
        snprintf(url, sizeof url, "https://localhost:%d/hello", port);
        fetch_body(&k, url, 200, "hello over tls\n");
        cli_free(&k);
    }
    before = rss_kib();
    for (round = 0; round < 3; round++) {
        int cut = 0;
        for (i = 0; i < TLS_STALL_N; i++) {
            cs[i] = cli_open(port);
            REQUIRE(cli_send(cs[i], (const char *)hello, sizeof hello) == 0);
        }
        CHECK_EQ_INT(wait_connections(s, TLS_STALL_N), TLS_STALL_N);
        during = rss_kib();
        fprintf(stderr, "    round %d: %d stalled handshakes, RSS +%ld KiB (%ld bytes each)\n", round, TLS_STALL_N,
                during - before, (during - before) * 1024 / TLS_STALL_N);
        if (!UNDER_ASAN) CHECK(during - before < (long)TLS_STALL_N * TLS_STALL_KIB);
        for (i = 0; i < TLS_STALL_N; i++) {
            cut += read_to_eof(cs[i]); /* cut by the server, not by us */
            cli_close(cs[i]);
        }
        CHECK_EQ_INT(cut, TLS_STALL_N);
        CHECK_EQ_INT(wait_connections(s, 0), 0);
    }
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* Our client against our server: verification, redirects, resumption  */
/* ------------------------------------------------------------------ */

TEST(tls_client_verifies_the_peer) {
    server *s;
    int port, p_ipo, p_dnso, p_exp, p_self;
    char url[128];
    cli k;
    NEED_CERTS();
    s = tls_server(NULL, &port);
    {
        tn_tls_ctx *c;
        p_ipo = listen_tls(s, c = server_ctx("ipo"));
        tn_tls_ctx_free(c);
        p_dnso = listen_tls(s, c = server_ctx("dnso"));
        tn_tls_ctx_free(c);
        p_exp = listen_tls(s, c = server_ctx("exp"));
        tn_tls_ctx_free(c);
        p_self = listen_tls(s, c = server_ctx("self"));
        tn_tls_ctx_free(c);
    }
    cli_new(&k, client_ctx(0));
#define URL(host, p) (snprintf(url, sizeof url, "https://%s:%d/hello", host, p), url)
    fetch_body(&k, URL("localhost", port), 200, "hello over tls\n");
    fetch_body(&k, URL("127.0.0.1", port), 200, "hello over tls\n");
    /* a name against an address-only certificate, and the reverse */
    CHECK_EQ_INT(fetch_err(&k, URL("localhost", p_ipo)), TN_ETLS_NAME);
    fetch_body(&k, URL("127.0.0.1", p_ipo), 200, "hello over tls\n");
    CHECK_EQ_INT(fetch_err(&k, URL("127.0.0.1", p_dnso)), TN_ETLS_NAME);
    fetch_body(&k, URL("localhost", p_dnso), 200, "hello over tls\n");
    CHECK_EQ_INT(fetch_err(&k, URL("localhost", p_exp)), TN_ETLS_EXPIRED);
    CHECK_EQ_INT(fetch_err(&k, URL("localhost", p_self)), TN_ETLS_UNTRUSTED);
    /* plain HTTP where TLS was expected */
    CHECK_EQ_INT(fetch_err(&k, URL("127.0.0.1", s->port)), TN_ETLS);
    cli_free(&k);
    /* the default context trusts the system's store, which has no test CA */
    cli_new(&k, NULL);
    CHECK_EQ_INT(fetch_err(&k, URL("localhost", port)), TN_ETLS_UNTRUSTED);
    cli_free(&k);
    /* insecure: anything goes (tests only) */
    {
        tn_tls_opts o;
        tn_tls_ctx *c = NULL;
        memset(&o, 0, sizeof o);
        o.insecure = 1;
        REQUIRE(tn_tls_client_ctx_new(&o, &c) == 0);
        cli_new(&k, c);
        fetch_body(&k, URL("localhost", p_self), 200, "hello over tls\n");
        fetch_body(&k, URL("localhost", p_exp), 200, "hello over tls\n");
        cli_free(&k);
    }
    /* the failed handshakes left nothing behind on the server */
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
#undef URL
}

TEST(tls_versions_and_bad_options) {
    tn_tls_opts o;
    tn_tls_ctx *c = NULL;
    NEED_CERTS();
    memset(&o, 0, sizeof o);
    o.cert_file = fx("srv.crt");
    o.key_file = fx("other.key"); /* not its key */
    CHECK_EQ_INT(tn_tls_server_ctx_new(&o, &c), TN_EINVAL);
    CHECK(c == NULL);
    o.key_file = fx("missing.key");
    CHECK_EQ_INT(tn_tls_server_ctx_new(&o, &c), TN_EINVAL);
    o.key_file = fx("srv.key");
    o.min_version = 11;
    CHECK_EQ_INT(tn_tls_server_ctx_new(&o, &c), TN_EINVAL);
    o.min_version = 13;
    o.max_version = 12;
    CHECK_EQ_INT(tn_tls_server_ctx_new(&o, &c), TN_EINVAL);
    o.max_version = 0;
    if (!HAVE_TLS13) {
        CHECK_EQ_INT(tn_tls_server_ctx_new(&o, &c), TN_ENOTSUP);
        return;
    }
    /* a TLS 1.3 server and a client that stops at 1.2 have nothing in common */
    REQUIRE(tn_tls_server_ctx_new(&o, &c) == 0);
    {
        server *s = server_start(NULL, routes);
        int port = listen_tls(s, c);
        char url[128];
        cli k;
        tn_tls_ctx_free(c);
        snprintf(url, sizeof url, "https://localhost:%d/hello", port);
        cli_new(&k, client_ctx(12));
        CHECK_EQ_INT(fetch_err(&k, url), TN_ETLS);
        cli_free(&k);
        cli_new(&k, client_ctx(13));
        fetch_body(&k, url, 200, "hello over tls\n");
        cli_free(&k);
        server_stop(s);
    }
}

TEST(tls_client_redirects_between_http_and_https) {
    server *s;
    int port;
    char url[128];
    tn_http_response *r;
    cli k;
    NEED_CERTS();
    s = tls_server(NULL, &port);
    cli_new(&k, client_ctx(0));
    snprintf(url, sizeof url, "http://127.0.0.1:%d/to-https", s->port);
    REQUIRE(fetch(&k, url, NULL, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK_EQ_INT(r->redirects, 1);
    CHECK(strcmp(r->body, "hello over tls\n") == 0);
    snprintf(url, sizeof url, "https://localhost:%d/hello", port);
    CHECK(strcmp(r->effective_url, url) == 0);
    tn_http_response_free(r);
    snprintf(url, sizeof url, "https://localhost:%d/to-http", port);
    REQUIRE(fetch(&k, url, NULL, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK(strcmp(r->body, "plain again\n") == 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/plain", s->port);
    CHECK(strcmp(r->effective_url, url) == 0);
    tn_http_response_free(r);
    cli_free(&k);
    server_stop(s);
}

TEST(tls_client_keeps_alive_and_resumes_sessions) {
    static const char *const close_hdr[] = {"Connection: close", NULL};
    server *s;
    int port, i;
    char url[128];
    tn_http_response *r;
    tn_http_fetch_opts fo;
    cli k;
    NEED_CERTS();
    s = tls_server(NULL, &port);
    cli_new(&k, client_ctx(0));
    snprintf(url, sizeof url, "https://localhost:%d/hello", port);
    for (i = 0; i < 3; i++) { /* one connection, one handshake */
        REQUIRE(fetch(&k, url, NULL, &r) == 0);
        CHECK_EQ_INT(r->status, 200);
        CHECK_EQ_INT(r->reused, i > 0);
        tn_http_response_free(r);
    }
    memset(&fo, 0, sizeof fo);
    fo.headers = close_hdr;
    for (i = 0; i < 3; i++) { /* the pooled one, then a new connection each: resumed */
        REQUIRE(fetch(&k, url, &fo, &r) == 0);
        CHECK_EQ_INT(r->status, 200);
        CHECK_EQ_INT(r->reused, i == 0);
        CHECK_EQ_INT(r->tls_resumed, i > 0);
        tn_http_response_free(r);
    }
    /* a large body both ways, three times: records end anywhere in the
     * buffers (a record's rest left decrypted in TLS once stalled it) */
    for (i = 0; i < 3; i++) {
        char *big = (char *)malloc(3u << 20);
        size_t j;
        REQUIRE(big != NULL);
        for (j = 0; j < (3u << 20); j++) big[j] = (char)(j * 7 + j / 4096 + (size_t)i);
        memset(&fo, 0, sizeof fo);
        fo.body = big;
        fo.body_len = 3u << 20;
        snprintf(url, sizeof url, "https://localhost:%d/echo", port);
        REQUIRE(fetch(&k, url, &fo, &r) == 0);
        CHECK_EQ_INT(r->status, 200);
        CHECK_EQ_INT(r->body_len, 3u << 20);
        CHECK(r->body_len == (3u << 20) && memcmp(r->body, big, 3u << 20) == 0);
        tn_http_response_free(r);
        free(big);
    }
    cli_free(&k);
    server_stop(s);
}

/* A peer that accepts and never answers: the handshake has a deadline. */
TEST(tls_client_handshake_timeout) {
    struct sockaddr_in a;
    socklen_t sl = sizeof a;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    tn_http_client_opts o;
    tn_http_client *c;
    tn_loop *l;
    char url[128];
    void *v = NULL;
    NEED_CERTS();
    REQUIRE(lfd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(lfd, (struct sockaddr *)&a, sizeof a) == 0);
    REQUIRE(listen(lfd, 8) == 0); /* the backlog completes the connect; no one reads */
    REQUIRE(getsockname(lfd, (struct sockaddr *)&a, &sl) == 0);
    memset(&o, 0, sizeof o);
    o.connect_timeout_ms = 300;
    o.tls = client_ctx(0);
    REQUIRE(tn_loop_new(&l, NULL) == 0);
    REQUIRE(tn_http_client_new(l, &o, &c) == 0);
    tn_tls_ctx_free(o.tls);
    snprintf(url, sizeof url, "https://localhost:%d/", ntohs(a.sin_port));
    CHECK_EQ_INT(tn_run_sync(l, tn_http_fetch(c, url, NULL), 10000, &v), TN_ETLS_TIMEOUT);
    tn_http_client_free(c);
    FREE_LOOP_CLEAN(l);
    close(lfd);
}

/* ------------------------------------------------------------------ */
/* tn_stream_start_tls: an echo over TLS on one loop                   */
/* ------------------------------------------------------------------ */

typedef struct echo {
    tn_tls_ctx *sctx;
    tn_stream *srv;
    int served;
} echo;

static void echo_read(tn_future *f, void *arg);
static void echo_secure(tn_future *f, void *arg) {
    echo *e = (echo *)arg;
    int err = tn_future_error(f);
    tn_future_release(f);
    if (err) {
        tn_stream_close(e->srv);
        e->srv = NULL;
        return;
    }
    tn_future_on_done(tn_stream_read_until(e->srv, "\n", 1024), echo_read, e);
}
static void echo_read(tn_future *f, void *arg) {
    echo *e = (echo *)arg;
    tn_bytes *b = (tn_bytes *)tn_future_take(f);
    tn_future_release(f);
    if (!b) return; /* closed */
    tn_future_release(tn_stream_write(e->srv, b->data, b->len));
    tn_bytes_free(b);
    e->served++;
    tn_future_on_done(tn_stream_read_until(e->srv, "\n", 1024), echo_read, e);
}
static void echo_accept(tn_stream *s, void *arg) {
    echo *e = (echo *)arg;
    e->srv = s;
    tn_future_on_done(tn_stream_start_tls(s, e->sctx, NULL), echo_secure, e);
}

TEST(tls_stream_start_tls_echo) {
    echo e;
    tn_loop *l;
    tn_tls_ctx *cctx;
    tn_stream *cs;
    void *v = NULL;
    int lfd, port, i;
    NEED_CERTS();
    memset(&e, 0, sizeof e);
    e.sctx = server_ctx("srv");
    cctx = client_ctx(0);
    REQUIRE(tn_loop_new(&l, NULL) == 0);
    REQUIRE(tn_tcp_listen(l, "127.0.0.1", 0, echo_accept, &e, &lfd, &port) == 0);
    REQUIRE(tn_run_sync(l, tn_tcp_connect(l, "127.0.0.1", port, 5000), 10000, &v) == 0);
    cs = (tn_stream *)v;
    /* a server context where a client one belongs, and the reverse */
    CHECK_EQ_INT(tn_run_sync(l, tn_stream_start_tls(cs, cctx, "localhost"), 10000, NULL), 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_stream_start_tls(cs, cctx, "localhost"), 10000, NULL), TN_ESTATE);
    for (i = 0; i < 3; i++) {
        char line[32];
        tn_bytes *b;
        snprintf(line, sizeof line, "line %d\n", i);
        CHECK_EQ_INT(tn_run_sync(l, tn_stream_write(cs, line, strlen(line)), 10000, NULL), 0);
        REQUIRE(tn_run_sync(l, tn_stream_read_until(cs, "\n", 1024), 10000, &v) == 0);
        b = (tn_bytes *)v;
        CHECK(b->len == strlen(line) && memcmp(b->data, line, b->len) == 0);
        tn_bytes_free(b);
    }
    CHECK_EQ_INT(e.served, 3);
    tn_stream_close(cs);
    tn_run_sync(l, tn_sleep(l, 50), 0, NULL); /* the server side sees the close */
    if (e.srv) tn_stream_close(e.srv);
    /* a wrong name fails the handshake with its code */
    e.srv = NULL;
    REQUIRE(tn_run_sync(l, tn_tcp_connect(l, "127.0.0.1", port, 5000), 10000, &v) == 0);
    cs = (tn_stream *)v;
    CHECK_EQ_INT(tn_run_sync(l, tn_stream_start_tls(cs, cctx, "wrong.test"), 10000, NULL), TN_ETLS_NAME);
    tn_stream_close(cs);
    tn_run_sync(l, tn_sleep(l, 50), 0, NULL);
    if (e.srv) tn_stream_close(e.srv);
    tn_tcp_unlisten(l, lfd);
    tn_tls_ctx_free(cctx);
    tn_tls_ctx_free(e.sctx);
    FREE_LOOP_CLEAN(l);
}

/* ------------------------------------------------------------------ */
/* Our client against openssl s_server, nginx and Python Tornado       */
/* ------------------------------------------------------------------ */

static pid_t s_server(int port, const char *version) {
    char portstr[16], *argv[16];
    pid_t pid;
    int n = 0;
    snprintf(portstr, sizeof portstr, "127.0.0.1:%d", port);
    argv[n++] = (char *)"/usr/bin/openssl";
    argv[n++] = (char *)"s_server";
    argv[n++] = (char *)"-accept";
    argv[n++] = portstr;
    argv[n++] = (char *)"-cert";
    argv[n++] = (char *)fx("srv.crt");
    argv[n++] = (char *)"-key";
    argv[n++] = (char *)fx("srv.key");
    argv[n++] = (char *)version;
    argv[n++] = (char *)"-www";
    argv[n++] = (char *)"-quiet";
    argv[n] = NULL;
    pid = spawn(argv, NULL, NULL);
    REQUIRE(wait_port(port, 10000, pid) == 0);
    return pid;
}

TEST(tls_client_against_openssl_s_server) {
    static const char *const versions[] = {"-tls1_2", "-tls1_3"};
    int v;
    NEED_CERTS();
    if (access("/usr/bin/openssl", X_OK) != 0) SKIP("openssl not installed");
    for (v = 0; v < 2; v++) {
        int port = free_port();
        pid_t pid = s_server(port, versions[v]);
        char url[128];
        tn_http_response *r = NULL;
        int rc;
        cli k;
        cli_new(&k, client_ctx(0));
        snprintf(url, sizeof url, "https://localhost:%d/", port);
        rc = fetch(&k, url, NULL, &r);
        if (v == 1 && !HAVE_TLS13) {
            CHECK_EQ_INT(rc, TN_ETLS);
        } else {
            CHECK_EQ_INT(rc, 0);
            if (r) {
                CHECK_EQ_INT(r->status, 200);
                CHECK(strstr(r->body, v ? "TLSv1.3" : "TLSv1.2") != NULL);
            }
        }
        if (r) tn_http_response_free(r);
        cli_free(&k);
        stop_child(pid);
    }
}

TEST(tls_client_against_nginx) {
    char dir[] = "/tmp/tn_nginx_tls_XXXXXX", conf[4096], path[600], *log;
    char *argv[8], url[128];
    static const char *const close_hdr[] = {"Connection: close", NULL};
    tn_http_fetch_opts fo;
    tn_http_response *r;
    pid_t pid;
    int port, i, resumed = 0;
    cli k;
    NEED_CERTS();
    if (access("/usr/sbin/nginx", X_OK) != 0) SKIP("nginx not installed");
    make_tmp_dir(dir);
    port = free_port();
    snprintf(conf, sizeof conf,
             "daemon off;\nmaster_process off;\nworker_processes 1;\n"
             "error_log %s/error.log info;\npid %s/nginx.pid;\n"
             "events { worker_connections 64; }\n"
             "http {\n"
             "  log_format tn '$connection $ssl_protocol $ssl_session_reused \"$request\" $status';\n"
             "  access_log %s/access.log tn;\n"
             "  client_body_temp_path %s/body;\n  proxy_temp_path %s/proxy;\n"
             "  fastcgi_temp_path %s/fastcgi;\n  uwsgi_temp_path %s/uwsgi;\n  scgi_temp_path %s/scgi;\n"
             "  default_type text/plain;\n"
             "  server {\n"
             "    listen 127.0.0.1:%d ssl;\n"
             "    ssl_certificate %s;\n    ssl_certificate_key %s;\n"
             "    ssl_protocols TLSv1.2 TLSv1.3;\n"
             "    root %s/www;\n"
             "    location = /old { return 301 /file.txt; }\n"
             "  }\n"
             "}\n",
             dir, dir, dir, dir, dir, dir, dir, dir, port, fx("srv.crt"), fx("srv.key"), dir);
    write_file(dir, "nginx.conf", conf);
    snprintf(path, sizeof path, "%s/www", dir);
    REQUIRE(mkdir(path, 0755) == 0);
    write_file(path, "file.txt", "hello from nginx over tls\n");
    argv[0] = (char *)"/usr/sbin/nginx";
    argv[1] = (char *)"-p";
    argv[2] = dir;
    argv[3] = (char *)"-c";
    snprintf(conf, sizeof conf, "%s/nginx.conf", dir);
    argv[4] = conf;
    argv[5] = (char *)"-e";
    snprintf(path, sizeof path, "%s/error.log", dir);
    argv[6] = path;
    argv[7] = NULL;
    pid = spawn(argv, NULL, path);
    if (wait_port(port, 10000, pid) != 0) {
        print_file(path);
        REQUIRE(!"nginx did not start");
    }
    cli_new(&k, client_ctx(0));
    snprintf(url, sizeof url, "https://localhost:%d/file.txt", port);
    fetch_body(&k, url, 200, "hello from nginx over tls\n");
    snprintf(url, sizeof url, "https://localhost:%d/old", port);
    fetch_body(&k, url, 200, "hello from nginx over tls\n");
    memset(&fo, 0, sizeof fo);
    fo.headers = close_hdr;
    snprintf(url, sizeof url, "https://localhost:%d/file.txt", port);
    for (i = 0; i < 2; i++) {
        REQUIRE(fetch(&k, url, &fo, &r) == 0);
        CHECK_EQ_INT(r->status, 200);
        resumed += r->tls_resumed;
        tn_http_response_free(r);
    }
    cli_free(&k);
    stop_child(pid);
    snprintf(path, sizeof path, "%s/access.log", dir);
    log = read_file(path);
    REQUIRE(log != NULL);
    /* three requests on the first connection (a redirect followed on it),
     * the first with Connection: close too; the second of those on a new
     * connection, its session resumed */
    {
        long conns[8];
        char proto[8][16], reused[8][4];
        int n = 0;
        char *line, *save = NULL;
        for (line = strtok_r(log, "\n", &save); line && n < 8; line = strtok_r(NULL, "\n", &save))
            if (sscanf(line, "%ld %15s %3s", &conns[n], proto[n], reused[n]) == 3) n++;
        CHECK_EQ_INT(n, 5);
        if (n == 5) {
            CHECK(conns[0] == conns[1] && conns[1] == conns[2]);
            CHECK(conns[3] == conns[2] && conns[4] != conns[3]); /* the first close goes on the pooled one */
            CHECK(strcmp(proto[0], HAVE_TLS13 ? "TLSv1.3" : "TLSv1.2") == 0);
            CHECK(strcmp(reused[4], "r") == 0);
        }
        CHECK_EQ_INT(resumed, 1);
        if (n != 5 || resumed != 1) fprintf(stderr, "    access.log:\n%s\n", read_file(path));
    }
    free(log);
    rm_rf(dir);
}

static const char tornado_tls_app[] =
    "import asyncio, ssl, sys\n"
    "import tornado.web\n"
    "class Hello(tornado.web.RequestHandler):\n"
    "    def get(self): self.write('hello from tornado over tls\\n')\n"
    "class Echo(tornado.web.RequestHandler):\n"
    "    def post(self): self.write(self.request.body)\n"
    "class Chunks(tornado.web.RequestHandler):\n"
    "    async def get(self):\n"
    "        for i in range(50):\n"
    "            self.write('x' * 1000); await self.flush()\n"
    "async def main():\n"
    "    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)\n"
    "    ctx.load_cert_chain(sys.argv[2], sys.argv[3])\n"
    "    app = tornado.web.Application([('/hello', Hello), ('/echo', Echo), ('/chunks', Chunks)])\n"
    "    app.listen(int(sys.argv[1]), '127.0.0.1', ssl_options=ctx)\n"
    "    await asyncio.Event().wait()\n"
    "asyncio.run(main())\n";

TEST(tls_client_against_python_tornado) {
    char dir[] = "/tmp/tn_tornado_tls_XXXXXX", script[600], portstr[16], url[128];
    char *argv[8];
    tn_http_response *r;
    tn_http_fetch_opts fo;
    pid_t pid;
    int port;
    cli k;
    NEED_CERTS();
    if (!have_tornado()) SKIP("python3-tornado not installed");
    make_tmp_dir(dir);
    write_file(dir, "app.py", tornado_tls_app);
    snprintf(script, sizeof script, "%s/app.py", dir);
    port = free_port();
    snprintf(portstr, sizeof portstr, "%d", port);
    argv[0] = (char *)"/usr/bin/python3";
    argv[1] = script;
    argv[2] = portstr;
    argv[3] = (char *)fx("srv.crt");
    argv[4] = (char *)fx("srv.key");
    argv[5] = NULL;
    pid = spawn(argv, NULL, NULL);
    REQUIRE(wait_port(port, 20000, pid) == 0);
    cli_new(&k, client_ctx(0));
    snprintf(url, sizeof url, "https://localhost:%d/hello", port);
    fetch_body(&k, url, 200, "hello from tornado over tls\n");
    snprintf(url, sizeof url, "https://localhost:%d/chunks", port);
    REQUIRE(fetch(&k, url, NULL, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK_EQ_INT(r->body_len, 50000);
    CHECK(tn_http_response_header(r, "Transfer-Encoding") != NULL);
    tn_http_response_free(r);
    memset(&fo, 0, sizeof fo);
    fo.body = "posted over tls";
    fo.body_len = 15;
    snprintf(url, sizeof url, "https://localhost:%d/echo", port);
    REQUIRE(fetch(&k, url, &fo, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK(strcmp(r->body, "posted over tls") == 0);
    CHECK_EQ_INT(r->reused, 1);
    tn_http_response_free(r);
    cli_free(&k);
    stop_child(pid);
    rm_rf(dir);
}

#endif /* TLS_MISSING */
