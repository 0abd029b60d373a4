/* ceiling: the least an HTTP/1.1 hello server can do, as the machine's limit (not a competitor).
 * Raw level-triggered epoll, one thread; per readable event one read() and one write(); no parsing
 * beyond counting request ends "\r\n\r\n" (the match state survives reads); a fixed response
 * without Date, of the peers' size class. Usage: ceiling PORT (listens on 127.0.0.1). */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#define RESP "HTTP/1.1 200 OK\r\nServer: ceiling\r\nContent-Type: text/plain; charset=utf-8\r\n" \
             "Content-Length: 13\r\nConnection: keep-alive\r\n\r\nHello, world!"
enum { RLEN = sizeof RESP - 1, BATCH = 64 };
static char out[BATCH * RLEN], in[65536];
int main(int argc, char **argv) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(argc > 1 ? atoi(argv[1]) : 8890),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct epoll_event ev = {.events = EPOLLIN}, evs[256];
    int one = 1, ep = epoll_create1(0), ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), i, n;
    for (i = 0; i < BATCH; i++) memcpy(out + i * RLEN, RESP, RLEN);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) return 1;
    ev.data.u64 = (uint64_t)ls << 8; /* data: fd << 8 | matched bytes of "\r\n\r\n" so far */
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    for (;;) for (n = epoll_wait(ep, evs, 256, -1), i = 0; i < n; i++) {
        int fd = (int)(evs[i].data.u64 >> 8), st = (int)(evs[i].data.u64 & 3), c;
        ssize_t r, k, reqs = 0;
        if (fd == ls) {
            while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                ev.data.u64 = (uint64_t)c << 8;
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
            }
            continue;
        }
        if ((r = read(fd, in, sizeof in)) <= 0) { close(fd); continue; } /* EOF or error (EAGAIN: none, LT) */
        for (k = 0; k < r; k++) { /* "\r\n\r\n": st = bytes matched; a '\r' restarts at 1 */
            st = in[k] == "\r\n\r\n"[st] ? st + 1 : in[k] == '\r';
            if (st == 4) { reqs++; st = 0; }
        }
        ev.data.u64 = (uint64_t)fd << 8 | (uint64_t)st;
        if (st != (int)(evs[i].data.u64 & 3)) epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        for (; reqs > 0; reqs -= BATCH) /* one write per batch of up to 64 pipelined requests */
            if (write(fd, out, (size_t)(reqs < BATCH ? reqs : BATCH) * RLEN) < 0) break;
    }
}
