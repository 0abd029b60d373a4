/* fetch: an HTTP client on the command line, in the spirit of curl.
 *
 *   fetch [-X METHOD] [-d BODY] [-H 'Name: value']... [-i] [--cacert FILE] [-k] URL...
 *
 * Several URLs are fetched concurrently and printed in the order given; -i
 * prints the status line and headers first. Bodies are written as they
 * arrive (on_chunk), so memory stays a buffer's worth whatever their size:
 * one URL without -i goes straight to stdout, others wait in temporary
 * files for their turn. The exit status is non-zero if any fetch failed,
 * with the reason on stderr. https:// URLs need a TLS build (make builds
 * it with -DTN_TLS_OPENSSL when libssl-dev is there): the server is
 * verified against the system's CA store, or --cacert FILE; -k verifies
 * nothing (as curl's). */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_URLS 256
#define MAX_HEADERS 64

struct job {
    tn_co co;
    tn_http_client *client;
    tn_http_fetch_opts opts;
    char **urls;
    int n, i, show_headers, failed;
    tn_future *fs[MAX_URLS];
    int errs[MAX_URLS];
    tn_http_response *resp[MAX_URLS];
    FILE *out[MAX_URLS];
};

static int write_chunk(const char *data, size_t len, void *arg) {
    return fwrite(data, 1, len, (FILE *)arg) == len ? 0 : -5 /* -EIO */;
}

/* Awaits each fetch in order (they all run at once from the start). */
static int run(tn_co *co) {
    struct job *j = (struct job *)co;
    TN_BEGIN(co);
    for (j->i = 0; j->i < j->n; j->i++) {
        tn_http_fetch_opts o = j->opts;
        o.on_chunk = write_chunk;
        o.chunk_arg = j->out[j->i];
        j->fs[j->i] = tn_http_fetch(j->client, j->urls[j->i], &o);
    }
    for (j->i = 0; j->i < j->n; j->i++) {
        TN_AWAIT(co, j->fs[j->i]);
        j->errs[j->i] = co->err;
        j->resp[j->i] = (tn_http_response *)co->value;
    }
    TN_END(co);
}

int main(int argc, char **argv) {
    static struct job j;
    const char *headers[MAX_HEADERS + 1];
    int nh = 0, i, arg, insecure = 0;
    const char *cacert = NULL;
    tn_http_client_opts copts = {0};
    tn_loop *loop;
    for (arg = 1; arg < argc && argv[arg][0] == '-'; arg++) {
        const char *o = argv[arg];
        if (strcmp(o, "-i") == 0) j.show_headers = 1;
        else if (strcmp(o, "-X") == 0 && arg + 1 < argc) j.opts.method = argv[++arg];
        else if (strcmp(o, "-d") == 0 && arg + 1 < argc) {
            j.opts.body = argv[++arg];
            j.opts.body_len = strlen(j.opts.body);
        } else if (strcmp(o, "-H") == 0 && arg + 1 < argc && nh < MAX_HEADERS) headers[nh++] = argv[++arg];
        else if (strcmp(o, "--cacert") == 0 && arg + 1 < argc) cacert = argv[++arg];
        else if (strcmp(o, "-k") == 0 || strcmp(o, "--insecure") == 0) insecure = 1;
        else {
            fprintf(stderr, "usage: fetch [-X METHOD] [-d BODY] [-H 'Name: value'] [-i] [--cacert FILE] [-k] URL...\n");
            return 2;
        }
    }
    headers[nh] = NULL;
    if (nh) j.opts.headers = headers;
    j.urls = argv + arg;
    j.n = argc - arg;
    if (j.n < 1 || j.n > MAX_URLS) {
        fprintf(stderr, "fetch: give 1 to %d URLs\n", MAX_URLS);
        return 2;
    }
    for (i = 0; i < j.n; i++)
        if (!(j.out[i] = (j.n == 1 && !j.show_headers) ? stdout : tmpfile())) {
            perror("fetch: tmpfile");
            return 1;
        }
    if (cacert || insecure) {
#if defined(TN_TLS_OPENSSL) || defined(TN_TLS_MBEDTLS)
        tn_tls_opts t = {0};
        int rc;
        t.ca_file = cacert;
        t.insecure = insecure;
        if ((rc = tn_tls_client_ctx_new(&t, &copts.tls)) != 0) {
            fprintf(stderr, "fetch: --cacert %s: %s\n", cacert ? cacert : "", tn_strerror(rc));
            return 2;
        }
#else
        fprintf(stderr, "fetch: built without TLS (see the Makefile)\n");
        return 2;
#endif
    }
    if (tn_loop_new(&loop, NULL) || tn_http_client_new(loop, &copts, &j.client)) return 1;
#if defined(TN_TLS_OPENSSL) || defined(TN_TLS_MBEDTLS)
    tn_tls_ctx_free(copts.tls); /* the client holds its reference (NULL: nothing) */
#endif
    tn_run_sync(loop, tn_spawn(loop, &j.co, run), 0, NULL);
    for (i = 0; i < j.n; i++) {
        tn_http_response *r = j.resp[i];
        if (j.errs[i]) {
            fprintf(stderr, "fetch: %s: %s\n", j.urls[i], tn_strerror(j.errs[i]));
            j.failed = 1;
            continue;
        }
        if (j.show_headers) {
            size_t h;
            printf("HTTP/1.1 %d %s\r\n", r->status, r->reason);
            for (h = 0; h < r->num_headers; h++) printf("%s: %s\r\n", r->headers[h].name, r->headers[h].value);
            printf("\r\n");
        }
        if (j.out[i] != stdout) { /* its turn: copy it out */
            char buf[16384];
            size_t n;
            rewind(j.out[i]);
            while ((n = fread(buf, 1, sizeof buf, j.out[i])) > 0) fwrite(buf, 1, n, stdout);
        }
        if (r->status >= 400) {
            fprintf(stderr, "fetch: %s: HTTP %d %s\n", j.urls[i], r->status, r->reason);
            j.failed = 1;
        }
        tn_http_response_free(r);
    }
    for (i = 0; i < j.n; i++)
        if (j.out[i] != stdout) fclose(j.out[i]);
    tn_http_client_free(j.client);
    tn_loop_free(loop);
    return j.failed;
}
