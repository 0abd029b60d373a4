#!/bin/sh
# make bench-todo: GET /todos/{id} of examples/todo on PostgreSQL (a
# throwaway cluster on a loopback port), without a cache, with the
# in-memory single-flight cache, and with the cache in redis-server; then
# the single-flight count: 100 concurrent GET /todos right after a write
# (the write empties the cache) and how many database queries they cost.
#
# todo runs on core 0, wrk on core 1 (taskset), PostgreSQL and Redis where
# the kernel puts them (a database is usually another machine). The
# figures are for this machine only; the single-flight count is exact.
# Tools: wrk, postgresql, redis-server (each missing one is reported and
# its part skipped). DUR=seconds per measurement (5), CONNS=connections (50),
# POOL=todo's PostgreSQL connections (4).
set -u
cd "$(dirname "$0")/.."
DUR=${DUR:-5}
CONNS=${CONNS:-50}
TODO=./examples/todo
[ -x "$TODO" ] || { echo "bench-todo: build examples/todo first (make examples)"; exit 1; }
command -v wrk >/dev/null || { echo "skipped: wrk not installed"; exit 0; }
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$PGBIN" ] || { echo "skipped: postgresql not installed"; exit 0; }
"$TODO" --help 2>&1 | grep -q ' pg' || { echo "skipped: libpq-dev not installed (examples/todo built without pg)"; exit 0; }

TMP=$(mktemp -d /tmp/tn-bench-todo.XXXXXX)
chmod 755 "$TMP"
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    sleep 0.3
    [ -f "$TMP/pg/postmaster.pid" ] && kill -INT "$(head -1 "$TMP/pg/postmaster.pid")" 2>/dev/null
    sleep 0.5
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# A free loopback port: one the kernel hands out, then released.
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

AS=""
[ "$(id -u)" = 0 ] && { chown postgres "$TMP"; AS="runuser -u postgres --"; }
PGPORT=$(free_port)
$AS "$PGBIN/initdb" -D "$TMP/pg" -A trust -U postgres >/dev/null 2>&1 || { echo "bench-todo: initdb failed"; exit 1; }
$AS "$PGBIN/postgres" -D "$TMP/pg" -p "$PGPORT" -k "$TMP" -c listen_addresses=127.0.0.1 \
    -c fsync=off >"$TMP/pg.log" 2>&1 &
i=0
until "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT"; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "bench-todo: postgres did not start"; cat "$TMP/pg.log"; exit 1; }
    sleep 0.1
done
CONNINFO="host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres"

REDIS_PORT=""
if command -v redis-server >/dev/null; then
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$TMP" >"$TMP/redis.log" 2>&1 &
    PIDS="$PIDS $!"
    sleep 0.3
else
    echo "skipped: redis-server not installed (the Redis row)"
fi

start_todo() { # extra flags...: sets PORT and TODO_PID
    PORT=$(free_port)
    taskset -c 0 "$TODO" --port "$PORT" --pg "$CONNINFO" --pool "${POOL:-4}" "$@" >"$TMP/todo.log" 2>&1 &
    TODO_PID=$!
    PIDS="$PIDS $TODO_PID"
    i=0
    until curl -s -o /dev/null "http://127.0.0.1:$PORT/stats"; do
        i=$((i + 1)); [ $i -gt 100 ] && { echo "bench-todo: todo did not start"; cat "$TMP/todo.log"; exit 1; }
        sleep 0.05
    done
}
stop_todo() { kill "$TODO_PID" 2>/dev/null; wait "$TODO_PID" 2>/dev/null; }
queries() { curl -s "http://127.0.0.1:$PORT/stats" | sed -n 's/.*"db_queries": *\([0-9]*\).*/\1/p'; }

measure() { # label, flags...
    label=$1; shift
    start_todo "$@"
    curl -s -o /dev/null -d '{"title":"bench","done":false}' "http://127.0.0.1:$PORT/todos"
    q0=$(queries)
    rps=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" "http://127.0.0.1:$PORT/todos/1" |
          sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
    q1=$(queries)
    printf '%-34s %10s req/s   %s database queries\n' "$label" "${rps%.*}" "$((q1 - q0))"
    stop_todo
}

echo "GET /todos/1 on PostgreSQL, pool ${POOL:-4}, wrk -t1 -c$CONNS -d${DUR}s (todo on core 0, wrk on core 1, the database unpinned)"
measure "no cache"
measure "in-memory cache (--cache-ttl 60)" --cache-ttl 60
[ -n "$REDIS_PORT" ] && measure "Redis cache (--cache-ttl 60)" --cache-ttl 60 --redis "127.0.0.1:$REDIS_PORT"

# Single flight: a write invalidates the cached list, then 100 clients at
# once; every GET /todos must be one query between them.
start_todo --cache-ttl 60
curl -s -o /dev/null "http://127.0.0.1:$PORT/todos"
curl -s -o /dev/null -d '{"title":"x","done":false}' "http://127.0.0.1:$PORT/todos"
q0=$(queries)
/usr/bin/python3 - "$PORT" <<'EOF'
import socket, sys
port = int(sys.argv[1])
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
for s in socks:
    s.sendall(b"GET /todos HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
ok = 0
for s in socks:
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    ok += data.startswith(b"HTTP/1.1 200")
print("100 concurrent GET /todos after a write: %d answered 200" % ok)
EOF
q1=$(queries)
echo "database queries they cost: $((q1 - q0))"
stop_todo
