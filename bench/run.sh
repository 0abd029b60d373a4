#!/usr/bin/env bash
# bench/run.sh: the HTTP benchmarks of tornado.h against nginx, h2o, Python Tornado and a raw
# epoll "ceiling", then the core micro-benchmarks (bench/core.c). See bench/README.md.
#
#   make bench                  (or: bash bench/run.sh from anywhere)
#
# Environment: ROUNDS (3), WRK_SECS (5), IDLE_CONNS (5000), MANY_CONNS (10000), MANY_SECS (5),
# PEERS ("tornado.h nginx h2o python ceiling"), CC (cc), TNB_README=1 to also put the results
# in bench/README.md (they always go to bench/results.md, untracked), TNB_CORE=0 to skip the
# core micro-benchmarks, TNB_MAIN=0 to skip workloads 1-5, TNB_SCALE=0 workload 8, TNB_TLS=0 workload 9, TLS_IDLE_CONNS (1000),
# TNB_COUNTS=0 workload 10 (the deterministic figures of bench/counts.sh; COUNTS_N1, COUNTS_N2 ...: see there).
# Every peer is started here, with its own temporary configuration, on a free loopback port, and
# stopped here; servers run on CPU 0 and load generators on CPU 1 (taskset). Each round runs every
# peer once (A B C ... A B C ...); within a round a peer is started fresh and gets workload 4 (idle
# memory, on a fresh process), then 1+3 (keep-alive, CPU), 2 (pipelined), 5 (10k connections).
set -u
LC_ALL=C
export LC_ALL
cd "$(dirname "$0")" || exit 1
BENCH=$(pwd)
ROUNDS=${ROUNDS:-3}
WRK_SECS=${WRK_SECS:-5}
IDLE_CONNS=${IDLE_CONNS:-5000}
MANY_CONNS=${MANY_CONNS:-10000}
MANY_SECS=${MANY_SECS:-5}
PEERS=${PEERS:-"tornado.h nginx h2o python ceiling"}
CC=${CC:-cc}
PY=/usr/bin/python3
CMDLINE=${TNB_BENCH_CMD:-"make bench"}
T_START=$(date +%s)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tnbench.XXXXXX") || exit 1
chmod 755 "$TMP" # nginx workers and h2o drop to nobody when started as root
RES=$TMP/results.tsv
LOG=$BENCH/run.log
: >"$RES"
: >"$LOG"
SRV_PID=
log() { printf '[%s] %s\n' "$(date +%T.%N | cut -c1-12)" "$*" >>"$LOG"; }
say() { printf '%s\n' "$*"; log "$*"; }

children_of() { # every process whose parent is $1
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$1" '{ pid = $1; sub(/^.*\) /, ""); if ($2 == p) print pid }'
}

stop_server() {
    local pid=$SRV_PID kids
    [ -n "$pid" ] || return 0
    SRV_PID=
    kids=$(children_of "$pid")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        say "warning: server pid $pid did not stop on SIGTERM in 5 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    for k in $kids; do # --workers children and nginx's workers: gone with their parent, normally
        for _ in $(seq 20); do kill -0 "$k" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$k" 2>/dev/null
    done
    return 0
}
cleanup() { stop_server; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- tools ---------------------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1; }
if have taskset; then
    SRV_CPU="taskset -c 0"; GEN_CPU="taskset -c 1"
else
    SRV_CPU=""; GEN_CPU=""; say "note: taskset not installed: server and load are not pinned"
fi
HAVE_WRK=1
have wrk || { HAVE_WRK=0; say "skipped: wrk not installed (workloads 1, 2 and 3)"; }

build() { # out src flags...
    local out=$1 src=$2
    shift 2
    "$CC" "$@" -o "$out" "$src" >>"$LOG" 2>&1 || { say "error: cannot build $out from $src (see $LOG)"; exit 1; }
}
mkdir -p "$TMP/bin"
build "$TMP/bin/hello" ../examples/hello.c -O2 -pthread
build "$TMP/bin/ceiling" ceiling.c -O2 -std=c99
build "$TMP/bin/idle" idle.c -O2 -std=c99
build "$TMP/bin/many" many.c -O2 -std=c99

# ---- limits and ports ----------------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
if [ "$MANY_CONNS" -gt $((NOFILE - 64)) ]; then
    say "note: RLIMIT_NOFILE is $NOFILE: workload 5 uses $((NOFILE - 64)) connections instead of $MANY_CONNS"
    MANY_CONNS=$((NOFILE - 64))
fi
if [ "$IDLE_CONNS" -gt $((NOFILE - 64)) ]; then IDLE_CONNS=$((NOFILE - 64)); fi

listening() { # port: is anything listening on it (IPv4 or IPv6)?
    local hex
    hex=$(printf '%04X' "$1")
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }'
}
NEXT_PORT=$((20000 + $$ % 4000 * 2))
free_port() { # below the ephemeral range, so no client socket holds it
    while listening "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
    PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
    [ "$NEXT_PORT" -ge 32000 ] && NEXT_PORT=20000
}

ready() { # port pid: wait up to 10 s for a 200 on GET /
    local line
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || return 1
        if exec 3<>"/dev/tcp/127.0.0.1/$1"; then
            printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$1" >&3
            line=
            read -r -t 2 line <&3
            exec 3<&- 3>&-
            case $line in "HTTP/1."?" 200"*) return 0 ;; esac
        fi 2>/dev/null
        sleep 0.1
    done
    return 1
}

child_of() { # the first process whose parent is $1
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$1" '{ pid = $1; sub(/^.*\) /, ""); if ($2 == p) { print pid; exit } }'
}

# ---- peers: each sets SRV_PID (to stop), CPU_PIDS (to account), RSS_PID (holds connections) ---
peer_available() {
    case $1 in
    tornado.h | ceiling) return 0 ;;
    nginx) have nginx || { say "skipped: nginx not installed"; return 1; } ;;
    h2o) have h2o || { say "skipped: h2o not installed"; return 1; } ;;
    python) { [ -x $PY ] && $PY -c 'import tornado.web' 2>/dev/null; } || { say "skipped: python3-tornado not installed ($PY -c 'import tornado')"; return 1; } ;;
    *) say "skipped: unknown peer $1"; return 1 ;;
    esac
}

# Workload 9 (TLS): TLS_PORT set makes start_peer start the peer with a TLS listener there
# too (plain HTTP stays on port, for the readiness check): tornado.h as examples/httpbin
# --tls-cert (its / answers Hello, world!), built with OpenSSL; nginx with "listen ... ssl".
# Both use the same self-signed P-256 certificate, OpenSSL's defaults and TLS 1.2 and 1.3
# (nginx 1.22 stops at 1.2 unless told), so both speak 1.3 to wrk.
TLS_PORT=

start_peer() { # name port
    local name=$1 port=$2 d=$TMP/$1
    mkdir -p "$d"
    log "starting $name on port $port"
    chmod 755 "$d"
    case $name in
    tornado.h)
        if [ -n "$TLS_PORT" ]; then
            $SRV_CPU "$TMP/bin/httpbin-tls" --port "$port" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" \
                --tls-port "$TLS_PORT" >>"$d/out" 2>&1 &
        else
            $SRV_CPU "$TMP/bin/hello" --port "$port" --workers "$WORKERS" >>"$d/out" 2>&1 &
        fi
        SRV_PID=$! ;;
    ceiling) $SRV_CPU "$TMP/bin/ceiling" "$port" >>"$d/out" 2>&1 & SRV_PID=$! ;;
    python) $SRV_CPU $PY "$BENCH/tornado_hello.py" "$port" >>"$d/out" 2>&1 & SRV_PID=$! ;;
    nginx)
        cat >"$d/nginx.conf" <<EOF
worker_processes $WORKERS;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    keepalive_requests 1000000;
    default_type text/plain;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    server {
        listen 127.0.0.1:$port;
        ${TLS_PORT:+listen 127.0.0.1:$TLS_PORT ssl; ssl_protocols TLSv1.2 TLSv1.3; ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem;}
        location / { return 200 "Hello, world!"; }
    }
}
EOF
        $SRV_CPU nginx -e "$d/error.log" -p "$d/" -c "$d/nginx.conf" >>"$d/out" 2>&1 &
        SRV_PID=$!
        ;;
    h2o)
        mkdir -p "$d/www"
        printf 'Hello, world!' >"$d/www/index.txt"
        chmod 755 "$d/www"
        chmod 644 "$d/www/index.txt"
        cat >"$d/h2o.conf" <<EOF
num-threads: 1
max-connections: 20000
file.etag: OFF
listen:
  host: 127.0.0.1
  port: $port
hosts:
  default:
    paths:
      /:
        file.dir: $d/www
        file.index: [ 'index.txt' ]
EOF
        $SRV_CPU h2o -c "$d/h2o.conf" >>"$d/out" 2>&1 &
        SRV_PID=$!
        ;;
    esac
    if ! ready "$port" "$SRV_PID"; then
        say "error: $name did not answer GET / on port $port (log: $(tail -n 3 "$d/out" "$d/error.log" 2>/dev/null | tr '\n' ' '))"
        stop_server
        return 1
    fi
    CPU_PIDS=$SRV_PID
    RSS_PID=$SRV_PID
    if [ "$name" = nginx ]; then
        local w
        w=$(child_of "$SRV_PID")
        [ -n "$w" ] || { say "error: no nginx worker found"; stop_server; return 1; }
        CPU_PIDS="$SRV_PID,$w"
        RSS_PID=$w
    fi
    if [ "$WORKERS" -gt 1 ]; then # workload 8: every worker process counts (children of the first)
        sleep 0.3                  # the others open their listening sockets
        CPU_PIDS=$SRV_PID
        for w in $(children_of "$SRV_PID"); do CPU_PIDS="$CPU_PIDS,$w"; done
    fi
    return 0
}

cpu_ticks() { # comma-separated pids [u] -> utime+stime (with u: utime) summed
    local p t=0 v
    for p in ${1//,/ }; do
        v=$(awk -v u="${2:-}" '{ sub(/^.*\) /, ""); print u == "u" ? $12 : $12 + $13 }' "/proc/$p/stat" 2>/dev/null) || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

HZ=$(getconf CLK_TCK)
# user + nice + steal time over all CPUs. Interference is judged on user time only: system time
# also goes to kernel threads doing the benchmark's own work (freeing thousands of sockets, for
# one), while what competes with a benchmark (a compiler, a test suite) runs mostly in user mode.
sys_busy() { awk '/^cpu[0-9]/ { b += $2 + $3 + $9 } END { print b }' /proc/stat; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# run_gen peer round label cpu_pids cmd...: runs a load generator (bounded by `timeout`), its
# output in GEN_OUT, its exit status in GEN_RC, the server's CPU (utime+stime) over it in
# SRV_TICKS. It also measures interference: user (and stolen) CPU time spent on the machine by
# anything but the server and the load generator, as a percentage of both CPUs over the run;
# above 10% the run is marked NOISY and left out of the medians when a quieter one exists.
run_gen() {
    local peer=$1 r=$2 label=$3 pids=$4 s0 s1 u0 u1 b0 b1 t0 t1 gt ga other
    shift 4
    s0=$(cpu_ticks "$pids"); u0=$(cpu_ticks "$pids" u); b0=$(sys_busy); t0=$(now_ms)
    ( "$@" >"$TMP/gen.out" 2>&1; rc=$?; times >"$TMP/gen.times"; exit $rc )
    GEN_RC=$?
    s1=$(cpu_ticks "$pids"); u1=$(cpu_ticks "$pids" u); b1=$(sys_busy); t1=$(now_ms)
    GEN_OUT=$(cat "$TMP/gen.out")
    SRV_TICKS=$((s1 - s0))
    # the generator's user time, from `times` (second line: children's user and system time)
    gt=$(awk -v hz="$HZ" 'NR == 2 { split($1, b, "m"); print int((b[1] * 60 + b[2]) * hz + 0.5) }' "$TMP/gen.times")
    ga=$(awk -v hz="$HZ" 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, b, "m"); t += b[1] * 60 + b[2] } print int(t * hz + 0.5) }' "$TMP/gen.times")
    other=$(awk -v b=$((b1 - b0)) -v s=$((u1 - u0)) -v g="${gt:-0}" -v ms=$((t1 - t0)) -v hz="$HZ" \
        'BEGIN { o = (b - s - g) / (2 * ms / 1000 * hz) * 100; if (o < 0) o = 0; printf "%.0f", o }')
    log "--- $peer round $r $label (exit $GEN_RC; server ${SRV_TICKS} ticks, generator ${ga} ticks (user ${gt}), $((t1 - t0)) ms, other load ${other}%)"
    log "$GEN_OUT"
    CUR_NOISE=$other
    rec "$peer" noise "$other"
    [ "$other" -gt 10 ] && log "NOISY: $peer round $r $label: ${other}% of both CPUs went to other work"
    return 0
}

# wait_quiet: before a peer's turn, wait (at most 9 s) until the machine is idle (< 10% busy
# over half a second), so that one peer does not get a busier machine than another.
wait_quiet() {
    local b0 b1 pct
    for _ in $(seq 30); do
        b0=$(sys_busy); sleep 0.3; b1=$(sys_busy)
        pct=$(((b1 - b0) * 1000 / (3 * HZ)))
        [ "$pct" -lt 10 ] && return 0
    done
    say "warning: the machine stayed busy (${pct}% of one CPU) while waiting to start the next peer"
}

# peer metric value: recorded with the other load of the last run_gen (0 outside one)
CUR_NOISE=0
rec() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$CUR_NOISE" >>"$RES"; }
problem() { printf 'problem\t%s\t%s\n' "$1" "$2" >>"$RES"; say "PROBLEM: $1: $2"; }

to_ms() { # wrk latency: 485.00us 3.49ms 1.02s 2.00m
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
        printf "%.3f", n }'
}

run_wrk() { # peer round kind(ka|pl|tka|ths) port cpu_pids [metric-prefix]
    local peer=$1 r=$2 kind=$3 port=$4 out rps total p50 p99 non2xx serr pre=${6:-} scheme=http
    local -a extra=()
    case $kind in
    pl) extra=(-s "$BENCH/pipeline.lua") ;;
    tka) scheme=https ;;                                   # workload 9: keep-alive over TLS
    ths) scheme=https; extra=(-H "Connection: close") ;;   # workload 9: a full handshake per request
    esac
    # shellcheck disable=SC2086
    if [ -n "$pre" ]; then # workload 8: nothing pinned, two wrk threads to feed two workers
        run_gen "$peer" "$r" "wrk $pre$kind" "$5" timeout $((WRK_SECS + 30)) wrk -t2 -c50 -d"${WRK_SECS}s" "${extra[@]}" "http://127.0.0.1:$port/"
    else
        run_gen "$peer" "$r" "wrk $kind" "$5" timeout $((WRK_SECS + 30)) $GEN_CPU wrk -t1 -c50 -d"${WRK_SECS}s" --latency "${extra[@]}" "$scheme://127.0.0.1:$port/"
    fi
    out=$GEN_OUT
    rps=$(printf '%s\n' "$out" | awk '/^Requests\/sec:/ { print $2 }')
    total=$(printf '%s\n' "$out" | awk '/requests in/ { print $1 }')
    p50=$(printf '%s\n' "$out" | awk '$1 == "50%" { print $2 }')
    p99=$(printf '%s\n' "$out" | awk '$1 == "99%" { print $2 }')
    non2xx=$(printf '%s\n' "$out" | awk '/Non-2xx/ { print $NF }')
    serr=$(printf '%s\n' "$out" | awk '/Socket errors/ { sub(/^.*Socket errors: */, ""); print }')
    if [ -z "$rps" ] || [ -z "$total" ]; then
        problem "$peer" "round $r wrk $pre$kind: no result ($(printf '%s' "$out" | tail -n 2 | tr '\n' ' '))"
        return
    fi
    if [ -n "$pre" ]; then
        rec "$peer" "$pre${kind}_rps" "$rps"
        [ -n "$non2xx" ] && problem "$peer" "round $r wrk $pre$kind: $non2xx non-2xx/3xx responses"
        [ -n "$serr" ] && problem "$peer" "round $r wrk $pre$kind: socket errors: $serr"
        return 0
    fi
    rec "$peer" "${kind}_rps" "$rps"
    # latency only for keep-alive: with pipelining wrk times batches, and its percentiles of
    # them are unreliable (it prints 0us for the 99th at high rates)
    if [ "$kind" = ka ] && [ -n "$p50" ]; then
        rec "$peer" "${kind}_p50" "$(to_ms "$p50")"
        rec "$peer" "${kind}_p99" "$(to_ms "$p99")"
    fi
    if [ "$kind" = ka ] && [ "$total" -gt 0 ]; then
        # ticks -> microseconds of server CPU per request served
        rec "$peer" ka_cpu_us "$(awk -v t="$SRV_TICKS" -v hz="$HZ" -v n="$total" 'BEGIN { printf "%.3f", t / hz * 1e6 / n }')"
    fi
    [ -n "$non2xx" ] && problem "$peer" "round $r wrk $kind: $non2xx non-2xx/3xx responses"
    [ -n "$serr" ] && problem "$peer" "round $r wrk $kind: socket errors: $serr"
    return 0
}

kv() { printf '%s\n' "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'; }

run_idle() { # peer round port rss_pid
    local out rc
    # shellcheck disable=SC2086 # GEN_CPU is a command prefix, split on purpose
    run_gen "$1" "$2" idle "$4" timeout 120 $GEN_CPU "$TMP/bin/idle" "$3" "$4" "$IDLE_CONNS"
    out=$GEN_OUT rc=$GEN_RC
    case $out in idle\ *) ;; *) problem "$1" "round $2 idle: no result (exit $rc): $out"; return ;; esac
    rec "$1" idle_bpc "$(kv "$out" bytes_per_conn)"
    [ $rc -eq 0 ] || problem "$1" "round $2 idle: not every request answered with 2xx: $out"
}

run_many() { # peer round port cpu_pids
    local out rc
    # shellcheck disable=SC2086
    run_gen "$1" "$2" many "$4" timeout 120 $GEN_CPU "$TMP/bin/many" "$3" "$4" "$MANY_CONNS" "$MANY_SECS"
    out=$GEN_OUT rc=$GEN_RC
    case $out in many\ *) ;; *) problem "$1" "round $2 many: no result (exit $rc): $out"; return ;; esac
    rec "$1" many_p50 "$(kv "$out" p50_ms)"
    rec "$1" many_p99 "$(kv "$out" p99_ms)"
    rec "$1" many_cpu "$(kv "$out" cpu_s)"
    rec "$1" many_conns "$(kv "$out" connected)"
    [ $rc -eq 0 ] || problem "$1" "round $2 many: $out"
}

run_idle_tls() { # peer round port rss_pid
    local out rc
    # shellcheck disable=SC2086
    run_gen "$1" "$2" idle_tls "$4" timeout 120 $GEN_CPU $PY "$BENCH/idle_tls.py" "$3" "$4" "$TLS_IDLE_CONNS"
    out=$GEN_OUT rc=$GEN_RC
    case $out in idle_tls\ *) ;; *) problem "$1" "round $2 idle_tls: no result (exit $rc): $out"; return ;; esac
    rec "$1" tidle_bpc "$(kv "$out" bytes_per_conn)"
    [ $rc -eq 0 ] || problem "$1" "round $2 idle_tls: not every request answered with 2xx: $out"
}

WORKERS=1

# ---- the rounds ----------------------------------------------------------------------------
ACTIVE=
for p in $PEERS; do peer_available "$p" && ACTIVE="$ACTIVE $p"; done
say "peers:$ACTIVE; $ROUNDS rounds; RLIMIT_NOFILE $NOFILE; server on CPU 0, load on CPU 1; log: $LOG"
say "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    [ "${TNB_MAIN:-1}" != 0 ] || break # workloads 1-5 skipped (TNB_MAIN=0)
    for p in $ACTIVE; do
        wait_quiet
        free_port
        start_peer "$p" "$PORT" || { problem "$p" "round $r: did not start"; continue; }
        printf 'round %s/%s %-10s port %s ...' "$r" "$ROUNDS" "$p" "$PORT"
        run_idle "$p" "$r" "$PORT" "$RSS_PID"
        if [ $HAVE_WRK = 1 ]; then
            run_wrk "$p" "$r" ka "$PORT" "$CPU_PIDS"
            run_wrk "$p" "$r" pl "$PORT" "$CPU_PIDS"
        fi
        run_many "$p" "$r" "$PORT" "$CPU_PIDS"
        kill -0 "$SRV_PID" 2>/dev/null || problem "$p" "round $r: the server exited during the run"
        log "stopping $p"
        stop_server
        log "stopped $p"
        printf ' done (%ss)\n' $(($(date +%s) - T_START))
    done
done

# ---- workload 8: scaling from 1 to 2 workers -------------------------------------------------
# examples/hello --workers N (N processes, one SO_REUSEPORT socket each) and nginx with
# worker_processes N, N = 1 then 2, interleaved, nothing pinned: the workers and wrk -t2 share
# the machine's CPUs. With 2 CPUs the load generator takes one of them whatever N is, so the
# figure is indicative; nginx's own 1 -> 2 ratio, measured alongside, shows what this machine allows.
SCALE_PEERS=
for p in tornado.h nginx; do case " $ACTIVE " in *" $p "*) SCALE_PEERS="$SCALE_PEERS $p" ;; esac; done
if [ $HAVE_WRK = 1 ] && [ "${TNB_SCALE:-1}" != 0 ] && [ -n "$SCALE_PEERS" ]; then
    SAVE_CPU=$SRV_CPU
    SRV_CPU=
    for r in $(seq "$ROUNDS"); do
        for WORKERS in 1 2; do
            for p in $SCALE_PEERS; do
                wait_quiet
                free_port
                start_peer "$p" "$PORT" || { problem "$p" "scaling round $r, $WORKERS workers: did not start"; continue; }
                printf 'scaling round %s/%s %-10s %s worker(s) ...' "$r" "$ROUNDS" "$p" "$WORKERS"
                run_wrk "$p" "$r" ka "$PORT" "$CPU_PIDS" "w$WORKERS"
                run_wrk "$p" "$r" pl "$PORT" "$CPU_PIDS" "w$WORKERS"
                kill -0 "$SRV_PID" 2>/dev/null || problem "$p" "scaling round $r: the server exited during the run"
                stop_server
                printf ' done (%ss)\n' $(($(date +%s) - T_START))
            done
        done
    done
    WORKERS=1
    SRV_CPU=$SAVE_CPU
fi
# ---- workload 9: TLS ------------------------------------------------------------------------
# tornado.h (examples/httpbin built with -DTN_TLS_OPENSSL, --tls-cert) and nginx over TLS, same
# certificate, same rounds and pinning: keep-alive req/s (wrk over https), a new connection and
# handshake per request (wrk with Connection: close; wrk offers its last session again, so these
# are resumed TLS 1.3 handshakes: a key exchange, no signature), and memory per idle TLS
# connection (idle_tls.py, TLS_IDLE_CONNS of them, each a full handshake).
TLS_IDLE_CONNS=${TLS_IDLE_CONNS:-1000}
TLS_PEERS=
for p in tornado.h nginx; do case " $ACTIVE " in *" $p "*) TLS_PEERS="$TLS_PEERS $p" ;; esac; done
if [ "${TNB_TLS:-1}" != 0 ] && [ -n "$TLS_PEERS" ]; then
    if ! have openssl; then
        say "skipped: openssl not installed (workload 9)"
    elif ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -keyout "$TMP/key.pem" -out "$TMP/cert.pem" >>"$LOG" 2>&1; then
        say "error: cannot make a certificate (see $LOG)"
    elif ! "$CC" -O2 -std=c99 -DTN_TLS_OPENSSL -o "$TMP/bin/httpbin-tls" ../examples/httpbin.c -lssl -lcrypto -pthread >>"$LOG" 2>&1; then
        say "skipped: libssl-dev not installed (workload 9: examples/httpbin does not build with OpenSSL)"
    else
        chmod 644 "$TMP/key.pem" "$TMP/cert.pem" # nginx's worker reads them as nobody
        for r in $(seq "$ROUNDS"); do
            for p in $TLS_PEERS; do
                wait_quiet
                free_port
                TLS_PORT=$PORT
                free_port
                start_peer "$p" "$PORT" || { problem "$p" "TLS round $r: did not start"; TLS_PORT=; continue; }
                printf 'TLS round %s/%s %-10s port %s ...' "$r" "$ROUNDS" "$p" "$TLS_PORT"
                run_idle_tls "$p" "$r" "$TLS_PORT" "$RSS_PID"
                if [ $HAVE_WRK = 1 ]; then
                    run_wrk "$p" "$r" tka "$TLS_PORT" "$CPU_PIDS"
                    run_wrk "$p" "$r" ths "$TLS_PORT" "$CPU_PIDS"
                fi
                kill -0 "$SRV_PID" 2>/dev/null || problem "$p" "TLS round $r: the server exited during the run"
                stop_server
                TLS_PORT=
                printf ' done (%ss)\n' $(($(date +%s) - T_START))
            done
        done
    fi
fi
say "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- workload 10: the deterministic figures (bench/counts.sh) --------------------------------
# Instructions, syscalls and allocations per request, the 100 MiB transfers, the text sizes; its
# tables go at the end of the report. It also measures workload 6 (hello's text size): it appends
# that row to $RES (so TNB_COUNTS=0 leaves workload 6 out of the table, "not measured").
CUR_NOISE=0
: >"$TMP/counts.md"
if [ "${TNB_COUNTS:-1}" != 0 ]; then
    say "deterministic figures (bench/counts.sh; its raw output is in this log) ..."
    COUNTS_LOG=$LOG COUNTS_TSV=$RES CC=$CC bash "$BENCH/counts.sh" >"$TMP/counts.md" ||
        say "error: bench/counts.sh failed (see $LOG)"
fi

# ---- the table -----------------------------------------------------------------------------
# One row per metric: the median per peer over its clean runs (other load <= 10%), or over all of
# its runs, marked *, when none was clean; then tornado.h / peer.
TABLE=$TMP/table.md
awk -F'\t' -v peers="$ACTIVE" -v many="$MANY_CONNS" -v idle="$IDLE_CONNS" -v tidle="${TLS_IDLE_CONNS:-1000}" '
function median(list,   n, i, j, t, a) {
    n = split(list, a, " ")
    if (n == 0) return ""
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function fmt(v, kind) {
    if (v == "") return "-"
    if (kind == "int") return sprintf("%d", v + 0.5)
    if (v >= 100) return sprintf("%.0f", v)
    if (v >= 10) return sprintf("%.1f", v)
    if (v >= 1) return sprintf("%.2f", v)
    return sprintf("%.3f", v)
}
$1 == "problem" { next }
$2 == "noise" { runs[$1]++; if ($3 + 0 <= 10) clean_runs[$1]++; next }
{ k = $1 SUBSEP $2; all[k] = all[k] " " $3; if ($4 + 0 <= 10) clean[k] = clean[k] " " $3 }
END {
    np = split(peers, P, " ")
    name["tornado.h"] = "tornado.h"; name["nginx"] = "nginx"; name["h2o"] = "h2o"
    name["python"] = "Tornado (Python)"; name["ceiling"] = "ceiling"
    nm = 0
    M[++nm] = "ka_rps";     L[nm] = "1. keep-alive, req/s";                         K[nm] = "int"; B[nm] = "higher"
    M[++nm] = "ka_p50";     L[nm] = "1. keep-alive, p50 latency, ms";               K[nm] = "";    B[nm] = "lower"
    M[++nm] = "ka_p99";     L[nm] = "1. keep-alive, p99 latency, ms";               K[nm] = "";    B[nm] = "lower"
    M[++nm] = "pl_rps";     L[nm] = "2. pipelined x16, req/s";                      K[nm] = "int"; B[nm] = "higher"
    M[++nm] = "ka_cpu_us";  L[nm] = "3. server CPU per request (workload 1), us";   K[nm] = "";    B[nm] = "lower"
    M[++nm] = "idle_bpc";   L[nm] = "4. memory per idle connection (" idle " conns), bytes"; K[nm] = "int"; B[nm] = "lower"
    M[++nm] = "many_p50";   L[nm] = "5. " many " conns x 1 req/s, p50 latency, ms"; K[nm] = "";    B[nm] = "lower"
    M[++nm] = "many_p99";   L[nm] = "5. " many " conns x 1 req/s, p99 latency, ms"; K[nm] = "";    B[nm] = "lower"
    M[++nm] = "many_cpu";   L[nm] = "5. " many " conns, server CPU over the run, s"; K[nm] = "";   B[nm] = "lower"
    M[++nm] = "size_text";  L[nm] = "6. hello binary text (-Os, gc-sections, stripped), bytes"; K[nm] = "int"; B[nm] = "lower"
    M[++nm] = "tka_rps";    L[nm] = "9. TLS keep-alive, req/s";                     K[nm] = "int"; B[nm] = "higher"
    M[++nm] = "ths_rps";    L[nm] = "9. TLS, a new connection and (resumed) handshake per request, req/s"; K[nm] = "int"; B[nm] = "higher"
    M[++nm] = "tidle_bpc";  L[nm] = "9. memory per idle TLS connection (" tidle " conns), bytes"; K[nm] = "int"; B[nm] = "lower"
    hdr = "| workload, metric | better |"; sep = "|---|---|"
    for (i = 1; i <= np; i++) { hdr = hdr " " name[P[i]] " |"; sep = sep "---:|" }
    for (i = 1; i <= np; i++) if (P[i] != "tornado.h") { hdr = hdr " tornado.h / " name[P[i]] " |"; sep = sep "---:|" }
    print hdr; print sep
    for (m = 1; m <= nm; m++) {
        any = 0; row = "| " L[m] " | " B[m] " |"
        for (i = 1; i <= np; i++) {
            k = P[i] SUBSEP M[m]; star[i] = ""
            v[i] = median(clean[k])
            if (v[i] == "" && all[k] != "") { v[i] = median(all[k]); star[i] = "*" }
            if (v[i] != "") any = 1
            med[P[i], M[m]] = v[i]; medstar[P[i], M[m]] = star[i]
            row = row " " fmt(v[i], K[m]) star[i] " |"
        }
        if (!any) continue
        for (i = 1; i <= np; i++) if (P[i] == "tornado.h") { t = v[i]; ts = star[i] }
        for (i = 1; i <= np; i++) if (P[i] != "tornado.h")
            row = row " " ((t != "" && v[i] != "" && v[i] + 0 > 0) ? sprintf("%.2fx", t / v[i]) ((ts star[i]) != "" ? "*" : "") : "-") " |"
        print row
    }
    row = "| measurements with <= 10% other load / all | - |"
    for (i = 1; i <= np; i++) row = row " " clean_runs[P[i]] + 0 "/" runs[P[i]] + 0 " |"
    for (i = 1; i <= np; i++) if (P[i] != "tornado.h") row = row " |"
    print row
    # The targets of the issue, judged on the medians above (on the unrounded values); the
    # Targets section of bench/README.md explains the misses.
    print ""
    print "Targets (from the medians above; why the missed ones are missed: the Targets section of bench/README.md):"
    print ""
    print "| target | measured | verdict |"
    print "|---|---:|---|"
    target("pipelined req/s >= 0.85x the ceiling", "pl_rps", "ceiling", 0.85, "ge")
    target("pipelined req/s >= 5x nginx", "pl_rps", "nginx", 5, "ge")
    target("keep-alive req/s >= 1.0x nginx", "ka_rps", "nginx", 1, "ge")
    target("keep-alive req/s >= 1.0x h2o", "ka_rps", "h2o", 1, "ge")
    target("keep-alive server CPU per request <= 0.7x nginx", "ka_cpu_us", "nginx", 0.7, "le")
    target("memory per idle connection <= 256 bytes", "idle_bpc", "", 256, "le")
    target("keep-alive p99 latency <= nginx", "ka_p99", "nginx", 1, "le")
    target("workload 5 p99 latency <= nginx", "many_p99", "nginx", 1, "le")
    target("keep-alive req/s >= 25x Python Tornado", "ka_rps", "python", 25, "ge")
    target("hello binary text <= 24 KiB (24576 bytes)", "size_text", "", 24576, "le")
}
# One row of the targets table: tornado.h / peer (or the value of tornado.h itself when peer is
# "") against limit; * when either median is one of noisy runs only, as in the table.
function target(label, metric, peer, limit, dir,   t, p, x, shown, ok) {
    t = med["tornado.h", metric]
    p = (peer == "") ? 1 : med[peer, metric]
    if (t == "" || p == "" || p + 0 <= 0) { printf "| %s | - | not measured |\n", label; return }
    x = t / p
    shown = (peer == "") ? sprintf("%d", x + 0.5) : sprintf("%.2fx", x)
    if ((medstar["tornado.h", metric] (peer == "" ? "" : medstar[peer, metric])) != "") shown = shown "*"
    ok = (dir == "ge") ? (x >= limit) : (x <= limit)
    printf "| %s | %s | %s |\n", label, shown, ok ? "met" : "**missed**"
}' "$RES" >"$TABLE"

NPROC=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
{
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -sr), nproc $NPROC, CPU: ${CPU_MODEL:-unknown}."
    echo "Command: \`$CMDLINE\` (bench/run.sh). $ROUNDS rounds, peers interleaved;"
    echo "server \`taskset -c 0\`, load \`taskset -c 1\`; RLIMIT_NOFILE $NOFILE (servers and tools);"
    echo "wrk -t1 -c50 -d${WRK_SECS}s; idle: $IDLE_CONNS connections; many: $MANY_CONNS connections for ${MANY_SECS} s."
    echo "Ratios are tornado.h / peer: above 1 is better for req/s, below 1 is better for the rest."
    echo "A cell is the median of the peer's runs during which the rest of the machine used <= 10% of"
    echo "the CPUs; * marks a median of all runs when none was that quiet (an unreliable number)."
    echo
    cat "$TABLE"
    awk -F'\t' '$2 == "noise" { n++; if ($3 + 0 > 10) { b++; if (!(($1) in seen)) { seen[$1] = 1; l = l " " $1 } } }
        END { if (b) printf "\n**Interference:** during %d of %d measurements (peers:%s) more than 10%% of the machine went to other work; they are left out of the medians where a quieter one exists (see NOISY in bench/run.log). Rerun on an idle machine for firm numbers.\n", b, n, l }' "$RES"
    if grep -q 'w[12]ka_rps' "$RES"; then
        echo
        echo "Workload 8, scaling from 1 to 2 workers (\`hello --workers N\`: N processes on SO_REUSEPORT sockets;"
        echo "nginx: \`worker_processes N\`). Nothing is pinned: the workers and \`wrk -t2 -c50 -d${WRK_SECS}s\` share both"
        echo "CPUs, so a second worker competes with wrk for the second CPU: indicative only; nginx's ratio is"
        echo "measured alongside for reference. Medians as above."
        echo
        awk -F'\t' '$1 != "problem" && $2 ~ /^w[12](ka|pl)_rps$/ {
                k = $1 SUBSEP $2; all[k] = all[k] " " $3; if ($4 + 0 <= 10) clean[k] = clean[k] " " $3; seen[$1] = 1 }
            function median(list,   n, i, j, t, a) {
                n = split(list, a, " "); if (n == 0) return ""
                for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
                return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            }
            function cell(p, m,   k, v) { k = p SUBSEP m; v = median(clean[k]); st = ""
                if (v == "" && all[k] != "") { v = median(all[k]); st = "*" } return v }
            END {
                print "| workload 8, metric | server | 1 worker | 2 workers | 2 workers / 1 |"
                print "|---|---|---:|---:|---:|"
                split("ka pl", K, " "); lab["ka"] = "keep-alive, req/s"; lab["pl"] = "pipelined x16, req/s"
                split("tornado.h nginx", P, " ")
                for (i = 1; i <= 2; i++) for (j = 1; j <= 2; j++) { p = P[j]; if (!(p in seen)) continue
                    a = cell(p, "w1" K[i] "_rps"); sa = st; b = cell(p, "w2" K[i] "_rps"); sb = st
                    printf "| %s | %s | %s%s | %s%s | %s |\n", lab[K[i]], p, a == "" ? "-" : sprintf("%d", a + 0.5), sa,
                        b == "" ? "-" : sprintf("%d", b + 0.5), sb, (a != "" && b != "" && a > 0) ? sprintf("%.2fx", b / a) : "-" }
            }' "$RES"
    fi
    if grep -q '^problem' "$RES"; then
        echo
        echo "Failures seen during the run (unanswered or non-2xx requests, socket errors, a server that did not start or exited):"
        echo
        awk -F'\t' '$1 == "problem" { print "- " $2 ": " $3 }' "$RES"
    fi
    if [ -s "$TMP/counts.md" ]; then
        echo
        cat "$TMP/counts.md"
    fi
} >"$TMP/report.md"
echo
cat "$TMP/report.md"
cat "$TMP/report.md" >>"$LOG"

# ---- workload 7: core micro-benchmarks -----------------------------------------------------
CORE_OUT=
if [ "${TNB_CORE:-1}" != 0 ] && [ -f core.c ] && [ -f Makefile ]; then
    echo
    echo "core micro-benchmarks (bench/core.c):"
    if ${MAKE:-make} -s core >>"$LOG" 2>&1; then
        CORE_OUT=$(TNB_CMD="$SRV_CPU ./core" $SRV_CPU ./core 2>&1)
        printf '%s\n' "$CORE_OUT"
        log "$CORE_OUT"
    else
        say "skipped: core micro-benchmarks did not build (see $LOG)"
    fi
fi

# ---- the results: bench/results.md (untracked) every run; bench/README.md only when asked --
# The tracked README keeps figures someone chose to record (TNB_README=1 replaces the section
# between its markers with this run's); a plain run never dirties the tree.
{
    cat "$TMP/report.md"
    if [ -n "$CORE_OUT" ]; then
        echo
        echo "Core micro-benchmarks (workload 7, \`$SRV_CPU ./core\`):"
        echo
        echo '```'
        # without the progress lines ("core: running", "  1 add_callback ...   ...")
        printf '%s\n' "$CORE_OUT" | grep -Ev '^core: running|^  [0-9][a-z]? .*[.]$'
        echo '```'
    fi
} >"$TMP/results.md"
cat "$TMP/results.md" >results.md
echo
echo "results written to bench/results.md"
if [ "${TNB_README:-0}" = 1 ] && [ -f README.md ] && grep -q '<!-- results:begin -->' README.md; then
    {
        sed '/<!-- results:begin -->/q' README.md
        cat "$TMP/results.md"
        sed -n '/<!-- results:end -->/,$p' README.md
    } >"$TMP/README.new" && cat "$TMP/README.new" >README.md
    echo "bench/README.md updated (between the results markers)."
fi
echo "total time: $(($(date +%s) - T_START)) s"
