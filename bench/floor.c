/* floor: a hello server with a real HTTP/1.1 parser and nothing else, as the least a parsing
 * server costs on this machine (counts.sh's "floor": the picohttpparser class of the issue, built
 * with Debian's libhttp-parser, Node's former parser, since picohttpparser is not packaged).
 * ceiling.c's loop (raw level-triggered epoll, one thread, per readable event one read() and one
 * write() for every request it completed), plus: each request parsed by http_parser_execute with
 * its method, target and header fields recorded (pointers and lengths, as phr_parse_request gives
 * them), keep-alive decided by the parser (HTTP/1.0 without keep-alive: the answer, then close),
 * a malformed request closed, and a Date field formatted once a second. No routing, no limits,
 * no timeouts, no ETag: what tornado.h does beyond this is its own cost.
 * Usage: floor PORT (listens on 127.0.0.1). Build: cc -O2 floor.c -l:libhttp_parser.a */
#define _GNU_SOURCE
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAXFD = 65536, MAXH = 32, OUTCAP = 1 << 17 };
struct span { const char *p; size_t n; };
struct conn {
    http_parser p;
    struct span url, name[MAXH], value[MAXH];
    int nh, close_after;
};
static struct conn *conns[MAXFD];
static char in[65536], out[OUTCAP], date[64];
static size_t olen;
static time_t date_at;

#define HEAD "HTTP/1.1 200 OK\r\nServer: floor\r\n"
#define TAIL "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n"
static void put(const char *s, size_t n) {
    if (olen + n <= sizeof out) memcpy(out + olen, s, n);
    olen += n;
}
static int on_url(http_parser *p, const char *at, size_t n) {
    struct conn *c = (struct conn *)p->data;
    c->url.p = at;
    c->url.n = n;
    c->nh = 0;
    return 0;
}
static int on_field(http_parser *p, const char *at, size_t n) {
    struct conn *c = (struct conn *)p->data;
    if (c->nh < MAXH) c->name[c->nh] = (struct span){at, n};
    return 0;
}
static int on_value(http_parser *p, const char *at, size_t n) {
    struct conn *c = (struct conn *)p->data;
    if (c->nh < MAXH) c->value[c->nh++] = (struct span){at, n};
    return 0;
}
static int on_complete(http_parser *p) {
    struct conn *c = (struct conn *)p->data;
    int keep = http_should_keep_alive(p);
    put(HEAD, sizeof HEAD - 1);
    put(date, strlen(date));
    put(TAIL, sizeof TAIL - 1);
    if (!keep) put("Connection: close\r\n", 19);
    else if (p->http_minor == 0) put("Connection: keep-alive\r\n", 24);
    put("\r\nHello, world!", 15);
    if (!keep) c->close_after = 1;
    return 0;
}
static void hangup(int fd) {
    free(conns[fd]);
    conns[fd] = NULL;
    close(fd);
}

int main(int argc, char **argv) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(argc > 1 ? atoi(argv[1]) : 8891),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct epoll_event ev = {.events = EPOLLIN}, evs[256];
    int one = 1, ep = epoll_create1(0), ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), i, n;
    http_parser_settings st;
    http_parser_settings_init(&st);
    st.on_url = on_url;
    st.on_header_field = on_field;
    st.on_header_value = on_value;
    st.on_message_complete = on_complete;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) return 1;
    ev.data.fd = ls;
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    for (;;)
        for (n = epoll_wait(ep, evs, 256, -1), i = 0; i < n; i++) {
            int fd = evs[i].data.fd, c;
            ssize_t r;
            struct conn *k;
            time_t now;
            if (fd == ls) {
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAXFD || !(conns[c] = (struct conn *)calloc(1, sizeof *conns[c]))) {
                        close(c);
                        continue;
                    }
                    http_parser_init(&conns[c]->p, HTTP_REQUEST);
                    conns[c]->p.data = conns[c];
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    ev.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                }
                continue;
            }
            k = conns[fd];
            if ((r = read(fd, in, sizeof in)) <= 0) { /* EOF or error (EAGAIN: none, level-triggered) */
                hangup(fd);
                continue;
            }
            if ((now = time(NULL)) != date_at) { /* the Date field, once a second */
                struct tm tm;
                date_at = now;
                gmtime_r(&now, &tm);
                strftime(date, sizeof date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
            }
            olen = 0;
            if (http_parser_execute(&k->p, &st, in, (size_t)r) != (size_t)r || HTTP_PARSER_ERRNO(&k->p) != HPE_OK ||
                olen > sizeof out) {
                hangup(fd); /* malformed (or more answers than one write holds): close */
                continue;
            }
            if (olen && write(fd, out, olen) < 0) k->close_after = 1;
            if (k->close_after) hangup(fd);
        }
}
