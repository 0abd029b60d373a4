"""idle_tls: memory per idle keep-alive TLS connection (bench workload 9).

    /usr/bin/python3 idle_tls.py PORT RSS_PID [N]      (N: 1000 by default)

Workload 4 over TLS: reads the VmRSS of RSS_PID (the server process that holds the connections),
then opens N TLS connections one after another (connect, full handshake, one GET /, the whole
response read), so that what stays behind is the per-connection state; idles 0.5 s and reads
VmRSS again: (after - before) / N is the user-space memory per idle TLS connection, the TLS
library's share included. Then one more request on every connection, each answered with a 2xx.
Certificates are not verified (a load generator). Every phase has a deadline. Prints one line
of key=value pairs; exits 0 only if every request was answered with 2xx."""
import resource
import socket
import ssl
import sys
import time


def rss_kb(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return -1


def get(s, req):
    s.sendall(req)
    data = b''
    while b'\r\n\r\n' not in data:
        b = s.recv(65536)
        if not b:
            return 0
        data += b
    head, _, body = data.partition(b'\r\n\r\n')
    length = 0
    for line in head.split(b'\r\n')[1:]:
        k, _, v = line.partition(b':')
        if k.strip().lower() == b'content-length':
            length = int(v)
    while len(body) < length:
        b = s.recv(65536)
        if not b:
            return 0
        body += b
    return int(head.split(b' ')[1])


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = ('GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n' % port).encode()
    deadline = time.time() + 90
    rss0 = rss_kb(pid)
    socks, ok1, ok2 = [], 0, 0
    for _ in range(n):
        if time.time() > deadline:
            break
        try:
            s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=10))
            st = get(s, req)
        except OSError:
            continue
        ok1 += 200 <= st < 300
        socks.append(s)
    time.sleep(0.5)
    rss1 = rss_kb(pid)
    for s in socks:
        try:
            ok2 += 200 <= get(s, req) < 300
        except OSError:
            pass
    bpc = (rss1 - rss0) * 1024.0 / len(socks) if socks else -1
    print('idle_tls n=%d ok_first=%d ok_again=%d rss_before_kb=%d rss_idle_kb=%d bytes_per_conn=%.0f'
          % (n, ok1, ok2, rss0, rss1, bpc))
    sys.exit(0 if ok1 == n and ok2 == n else 1)


main()
