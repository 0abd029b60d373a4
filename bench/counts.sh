#!/usr/bin/env bash
# bench/counts.sh: the deterministic figures of tornado.h (bench/README.md, "Deterministic
# figures"): what machine load does not change, counted rather than timed.
#
#   make -C bench counts        (or: bash bench/counts.sh; bench/run.sh runs it too, TNB_COUNTS=0 skips it)
#
# 1. instructions per request (valgrind --tool=callgrind, user space) and 2. syscalls per request
#    (strace -f -c) of examples/hello (-O2, as run.sh builds it), nginx (one process:
#    master_process off), bench/floor.c (a real parser and nothing else: libhttp-parser) and
#    bench/ceiling.c (no parser), for three request patterns of bench/counts.c:
#    keep-alive, pipelined x16, ab-style (a connection per request). Each server runs twice,
#    with N1 and N2 requests, and the figure is (count(N2) - count(N1)) / (N2 - N1): start-up,
#    the listening socket and shutdown cancel out.
# 3. allocations per request (valgrind memcheck, "total heap usage: N allocs") of the tornado.h
#    server, the same way, and allocations and instructions per fetch of the tornado.h client
#    (bench/fetchn.c: N sequential tn_http_fetch on one client, against examples/hello).
# 4. 100 MiB each direction: server CPU (utime+stime, /proc/PID/stat) and VmHWM, examples/httpbin
#    against nginx, sending (GET /bytes/N, and the file through --static; nginx: the file with sendfile) and receiving (curl -T to
#    httpbin's POST /upload; nginx: a location that discards the body); the client receiving:
#    examples/fetch against curl, from nginx (user+sys and max RSS from /usr/bin/time).
# 5. text size (`size`) of examples/hello per feature configuration, a core-only program
#    (bench/coremin.c) and an empty main, against the targets.
#
# Environment: COUNTS_N1 (2000), COUNTS_N2 (12000), COUNTS_BIG (104857600 bytes), COUNTS_REPS (3
# transfers of figure 4 per server), CC (cc), COUNTS_LOG (raw output; default bench/run.log,
# overwritten; run.sh passes its own log, appended to), COUNTS_TSV (a file to which the hello
# text size is appended as "tornado.h<TAB>size_text<TAB>N<TAB>0": run.sh's workload 6 row).
# Prints markdown on stdout. Everything is on loopback, bounded by timeouts, and cleaned up.
set -u
LC_ALL=C
export LC_ALL
cd "$(dirname "$0")" || exit 1
BENCH=$(pwd)
N1=${COUNTS_N1:-2000}
N2=${COUNTS_N2:-12000}
BIG=${COUNTS_BIG:-104857600}
REPS=${COUNTS_REPS:-3}
CC=${CC:-cc}
if [ -n "${COUNTS_LOG:-}" ]; then LOG=$COUNTS_LOG; else LOG=$BENCH/run.log; : >"$LOG"; fi
T0=$(date +%s)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tncounts.XXXXXX") || exit 1
chmod 755 "$TMP"
log() { printf '[counts %s] %s\n' "$(date +%T)" "$*" >>"$LOG"; }
note() { printf '%s\n' "$*" >&2; log "$*"; }

STARTED= # pids this script started (servers and their wrappers)
# SIGTERM is repeated every 2 s: nginx with master_process off has a window (wide under valgrind)
# in which a signal sets its flag just before it blocks in epoll_wait without a timeout; a second
# one interrupts the wait. A server that handles none (examples/hello, the ceiling) dies of the
# first; valgrind and strace still write their output at that exit.
stop_pid() { # pid [tracee]: SIGTERM to the tracee (or pid), wait up to 30 s for pid, then SIGKILL
    local pid=$1 t=${2:-$1} i
    for i in $(seq 300); do
        [ $((i % 20)) = 1 ] && kill -TERM "$t" 2>/dev/null
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        note "warning: pid $pid did not exit 30 s after SIGTERM; SIGKILL"
        kill -KILL "$t" "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    STARTED=${STARTED// $pid/}
}
cleanup() {
    local p
    for p in $STARTED; do kill -KILL "$p" $(child_of "$p") 2>/dev/null; wait "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

have() { command -v "$1" >/dev/null 2>&1; }
if have taskset; then SRV_CPU="taskset -c 0"; GEN_CPU="taskset -c 1"; else SRV_CPU=; GEN_CPU=; fi
child_of() { # the first process whose parent is $1
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$1" '{ pid = $1; sub(/^.*\) /, ""); if ($2 == p) { print pid; exit } }'
}
listening() {
    local hex
    hex=$(printf '%04X' "$1")
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }'
}
NEXT_PORT=$((32000 - $$ % 4000 * 2))
free_port() {
    while listening "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
    PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
}
wait_listen() { # port pid: up to 60 s
    for _ in $(seq 600); do
        listening "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# ---- builds ------------------------------------------------------------------------------
B=$TMP/bin
mkdir -p "$B"
build() { # out src flags...
    local out=$1 src=$2
    shift 2
    "$CC" -o "$B/$out" "$src" "$@" >>"$LOG" 2>&1 || { note "error: cannot build $out from $src (see $LOG)"; return 1; }
}
build hello ../examples/hello.c -O2 -pthread || exit 1 # as run.sh builds it
build ceiling ceiling.c -O2 -std=c99 || exit 1
build counts counts.c -O2 -std=c99 -Wall -Wextra || exit 1
# The floor needs Debian's libhttp-parser-dev (its static library: all of it is user space the
# counts see); without it, its column is "-".
HAVE_FLOOR=1
if [ -r /usr/include/http_parser.h ]; then
    build floor floor.c -O2 -std=c99 -l:libhttp_parser.a || HAVE_FLOOR=0
else
    HAVE_FLOOR=0
    note "skipped: libhttp-parser-dev not installed (the floor's column)"
fi
build fetchn fetchn.c -O2 -std=c99 -D_GNU_SOURCE -pthread || exit 1
build httpbin ../examples/httpbin.c -O2 -std=c99 -pthread || exit 1 # plain HTTP, as make builds it without OpenSSL
build fetch ../examples/fetch.c -O2 -std=c99 -pthread || exit 1

HAVE_NGINX=1
have nginx || { HAVE_NGINX=0; note "skipped: nginx not installed (its columns)"; }
nginx_conf() { # dir port: one process (master_process off), Hello, world! at /, the big file, /upload
    mkdir -p "$1"
    cat >"$1/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    default_type text/plain;
    sendfile on;
    keepalive_requests 100000000; # one connection carries every request (default 1000)
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    server {
        listen 127.0.0.1:$2;
        location / { return 200 "Hello, world!"; }
        location = /big { alias $TMP/big; default_type application/octet-stream; }
        location = /upload { client_max_body_size 0; return 200 "ok\n"; }
    }
}
EOF
}
# server name port: the command line of a server
server_cmd() {
    case $1 in
    tornado.h) echo "$B/hello --port $2" ;;
    ceiling) echo "$B/ceiling $2" ;;
    floor) echo "$B/floor $2" ;;
    nginx) nginx_conf "$TMP/nginx-$2" "$2"; echo "nginx -e $TMP/nginx-$2/error.log -p $TMP/nginx-$2/ -c $TMP/nginx-$2/nginx.conf" ;;
    httpbin) echo "$B/httpbin --port $2 --static $TMP/www" ;;
    esac
}

# one_run tool server pattern n out: runs the server under the tool (callgrind|memcheck|strace),
# the client with n requests of pattern, stops the server; the tool's output in out.
# Returns non-zero if the client did not get n 200s.
one_run() {
    local tool=$1 srv=$2 pat=$3 n=$4 out=$5 pid tracee cmd rc
    free_port
    cmd=$(server_cmd "$srv" "$PORT")
    case $tool in
    # shellcheck disable=SC2086
    callgrind) $SRV_CPU valgrind -q --tool=callgrind --callgrind-out-file="$out" $cmd >>"$LOG" 2>&1 & ;;
    memcheck) $SRV_CPU valgrind --tool=memcheck --leak-check=no --log-file="$out" $cmd >>"$LOG" 2>&1 & ;;
    strace) $SRV_CPU strace -f -c -o "$out" $cmd >>"$LOG" 2>&1 & ;;
    esac
    pid=$!
    STARTED="$STARTED $pid"
    # shellcheck disable=SC2086
    timeout 120 $GEN_CPU "$B/counts" "$PORT" "$pat" "$n" >>"$LOG" 2>&1
    rc=$?
    tracee=$pid
    [ "$tool" = strace ] && tracee=$(child_of "$pid")
    stop_pid "$pid" "${tracee:-$pid}"
    [ $rc -eq 0 ] || note "problem: $srv $pat n=$n under $tool: the client did not get $n answers (exit $rc)"
    return $rc
}
ir_of() { awk '/^(summary|totals):/ { print $2; exit }' "$1" 2>/dev/null; }
allocs_of() { sed -n 's/.*total heap usage: \([0-9,]*\) allocs.*/\1/p' "$1" 2>/dev/null | tr -d , | head -n 1; }
# strace -c: "calls name" per line (the table's 4th column and its last one)
calls_of() { awk '$1 ~ /^[0-9.]+$/ && $NF != "total" && NF >= 5 { print $4, $NF }' "$1" 2>/dev/null; }

# diff_of a b n: (b - a) / n, printed with d decimals
per() { awk -v a="$1" -v b="$2" -v n="$3" -v d="${4:-0}" 'BEGIN { if (a == "" || b == "") { print ""; exit } v = (b - a) / n; if (v < 0 && v > -0.005) v = 0; printf "%.*f", d, v }'; }

PATTERNS="ka pl ab"
pat_name() { case $1 in ka) echo "keep-alive" ;; pl) echo "pipelined x16" ;; ab) echo "ab-style (a connection per request)" ;; esac; }
SERVERS="tornado.h"
[ $HAVE_NGINX = 1 ] && SERVERS="$SERVERS nginx"
[ $HAVE_FLOOR = 1 ] && SERVERS="$SERVERS floor"
SERVERS="$SERVERS ceiling"
declare -A IR SC SCB AL

# ---- 1 and 2: instructions and syscalls per request; 3: the server's allocations -------------
HAVE_VG=1 HAVE_ST=1
have valgrind || { HAVE_VG=0; note "skipped: valgrind not installed (instructions and allocations)"; }
have strace || { HAVE_ST=0; note "skipped: strace not installed (syscalls)"; }
for s in $SERVERS; do
    for p in $PATTERNS; do
        if [ $HAVE_VG = 1 ]; then
            one_run callgrind "$s" "$p" "$N1" "$TMP/cg1" && one_run callgrind "$s" "$p" "$N2" "$TMP/cg2" &&
                IR[$s,$p]=$(per "$(ir_of "$TMP/cg1")" "$(ir_of "$TMP/cg2")" $((N2 - N1)))
            log "callgrind $s $p: Ir(N1=$N1) $(ir_of "$TMP/cg1") Ir(N2=$N2) $(ir_of "$TMP/cg2") -> ${IR[$s,$p]:-}"
            rm -f "$TMP/cg1" "$TMP/cg2"
            if [ "$s" = tornado.h ]; then
                one_run memcheck "$s" "$p" "$N1" "$TMP/mc1" && one_run memcheck "$s" "$p" "$N2" "$TMP/mc2" &&
                    AL[$s,$p]=$(per "$(allocs_of "$TMP/mc1")" "$(allocs_of "$TMP/mc2")" $((N2 - N1)) 3)
                log "memcheck $s $p: allocs(N1) $(allocs_of "$TMP/mc1") allocs(N2) $(allocs_of "$TMP/mc2") -> ${AL[$s,$p]:-}"
            fi
        fi
        if [ $HAVE_ST = 1 ]; then
            if one_run strace "$s" "$p" "$N1" "$TMP/st1" && one_run strace "$s" "$p" "$N2" "$TMP/st2"; then
                calls_of "$TMP/st1" >"$TMP/c1"
                calls_of "$TMP/st2" >"$TMP/c2"
                log "strace $s $p N1: $(tr '\n' ' ' <"$TMP/c1")"
                log "strace $s $p N2: $(tr '\n' ' ' <"$TMP/c2")"
                # per request: every call whose count grows, largest first; the total
                SCB[$s,$p]=$(awk -v n=$((N2 - N1)) 'FNR == NR { a[$2] = $1; next } { d = ($1 - a[$2]) / n; t += d
                    if (d >= 0.005) printf "%.2f %s\n", d, $2 } END { }' "$TMP/c1" "$TMP/c2" | sort -k1,1nr -k2 |
                    awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $2, (($1 == int($1)) ? int($1) : $1) }')
                SC[$s,$p]=$(awk -v n=$((N2 - N1)) 'FNR == NR { a += $1; next } { b += $1 } END { printf "%.2f", (b - a) / n }' "$TMP/c1" "$TMP/c2")
            fi
        fi
        printf 'counts: %s %s done (%ss)\n' "$s" "$p" $(($(date +%s) - T0)) >&2
    done
done

# ---- 3: the client: allocations and instructions per fetch ---------------------------------
CL_AL= CL_IR=
if [ $HAVE_VG = 1 ]; then
    free_port
    # shellcheck disable=SC2086
    $SRV_CPU "$B/hello" --port "$PORT" >>"$LOG" 2>&1 &
    HP=$!
    STARTED="$STARTED $HP"
    if wait_listen "$PORT" "$HP"; then
        for t in memcheck callgrind; do
            for n in "$N1" "$N2"; do
                case $t in
                # shellcheck disable=SC2086
                memcheck) timeout 300 $GEN_CPU valgrind --tool=memcheck --leak-check=no --log-file="$TMP/f-$t-$n" "$B/fetchn" "http://127.0.0.1:$PORT/" "$n" >>"$LOG" 2>&1 ;;
                # shellcheck disable=SC2086
                callgrind) timeout 300 $GEN_CPU valgrind -q --tool=callgrind --callgrind-out-file="$TMP/f-$t-$n" "$B/fetchn" "http://127.0.0.1:$PORT/" "$n" >>"$LOG" 2>&1 ;;
                esac || note "problem: fetchn $n under $t failed"
            done
        done
        CL_AL=$(per "$(allocs_of "$TMP/f-memcheck-$N1")" "$(allocs_of "$TMP/f-memcheck-$N2")" $((N2 - N1)) 2)
        CL_IR=$(per "$(ir_of "$TMP/f-callgrind-$N1")" "$(ir_of "$TMP/f-callgrind-$N2")" $((N2 - N1)))
        log "fetchn: allocs $(allocs_of "$TMP/f-memcheck-$N1") $(allocs_of "$TMP/f-memcheck-$N2"), Ir $(ir_of "$TMP/f-callgrind-$N1") $(ir_of "$TMP/f-callgrind-$N2")"
    else
        note "problem: examples/hello did not start for the client figures"
    fi
    stop_pid "$HP"
    printf 'counts: client done (%ss)\n' $(($(date +%s) - T0)) >&2
fi

# ---- 4: 100 MiB each direction ------------------------------------------------------------
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%d", ($12 + $13) * 1000 / hz }' "/proc/$1/stat" 2>/dev/null; }
rchar() { awk '$1 == "rchar:" { print $2 }' "/proc/$1/io" 2>/dev/null; }
hwm_kb() { awk '$1 == "VmHWM:" { print $2 }' "/proc/$1/status" 2>/dev/null; }
declare -A BG
BIGCHK=
if ! have curl; then
    note "skipped: curl not installed (100 MiB transfers)"
else
    head -c "$BIG" /dev/zero | tr '\0' 'a' >"$TMP/big" # in the page cache from here on
    chmod 644 "$TMP/big"
    mkdir -p "$TMP/www" && ln -f "$TMP/big" "$TMP/www/big" # httpbin --static: the same file
    for s in httpbin nginx; do
        [ "$s" = nginx ] && [ $HAVE_NGINX = 0 ] && continue
        free_port
        # shellcheck disable=SC2086
        $SRV_CPU $(server_cmd "$s" "$PORT") >>"$LOG" 2>&1 &
        pid=$!
        STARTED="$STARTED $pid"
        if ! wait_listen "$PORT" "$pid"; then note "problem: $s did not start (100 MiB)"; stop_pid "$pid"; continue; fi
        url=http://127.0.0.1:$PORT/big
        [ "$s" = httpbin ] && url=http://127.0.0.1:$PORT/bytes/$BIG
        # sending: REPS downloads by curl
        c0=$(cpu_ms "$pid")
        for _ in $(seq "$REPS"); do
            # shellcheck disable=SC2086
            got=$(timeout 120 $GEN_CPU curl -s -o /dev/null -w '%{http_code} %{size_download}' "$url")
            [ "$got" = "200 $BIG" ] || { note "problem: $s sending: curl got '$got'"; BIGCHK="$BIGCHK $s-send"; }
        done
        c1=$(cpu_ms "$pid")
        BG[$s,send]=$(((c1 - c0) / REPS))
        if [ "$s" = httpbin ]; then # and the file, as nginx sends it (sendfile)
            for _ in $(seq "$REPS"); do
                # shellcheck disable=SC2086
                got=$(timeout 120 $GEN_CPU curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$PORT/static/big")
                [ "$got" = "200 $BIG" ] || { note "problem: httpbin sending the file: curl got '$got'"; BIGCHK="$BIGCHK $s-sendfile"; }
            done
            c1f=$(cpu_ms "$pid")
            BG[$s,sendf]=$(((c1f - c1) / REPS))
            c1=$c1f
        fi
        BG[$s,hwm]=$(hwm_kb "$pid")
        # receiving: REPS uploads (no Expect: 100-continue, so both get the body at once)
        uurl=http://127.0.0.1:$PORT/upload
        r0=$(rchar "$pid")
        for _ in $(seq "$REPS"); do
            # shellcheck disable=SC2086
            got=$(timeout 120 $GEN_CPU curl -s -o "$TMP/up.out" -H 'Expect:' -X POST -T "$TMP/big" -w '%{http_code} %{size_upload}' "$uurl")
            [ "$got" = "200 $BIG" ] || { note "problem: $s receiving: curl got '$got'"; BIGCHK="$BIGCHK $s-recv"; }
            [ "$s" = httpbin ] && ! grep -q "^length=$BIG " "$TMP/up.out" && { note "problem: httpbin /upload answered $(head -c 80 "$TMP/up.out")"; BIGCHK="$BIGCHK $s-recv"; }
        done
        c2=$(cpu_ms "$pid")
        r1=$(rchar "$pid")
        BG[$s,recv]=$(((c2 - c1) / REPS))
        BG[$s,rhwm]=$(hwm_kb "$pid")
        BG[$s,rchar]=$(((r1 - r0) / REPS))
        # The server really reads the body: one more upload (not timed) with strace attached,
        # the bytes its read calls returned summed. (rchar, in the log, counts read(2) only:
        # httpbin's; nginx reads with recv(2).)
        if have strace; then
            strace -p "$pid" -e trace=read,readv,recvfrom,recvmsg -o "$TMP/rx" >>"$LOG" 2>&1 &
            sp=$!
            STARTED="$STARTED $sp"
            sleep 0.5
            # shellcheck disable=SC2086
            timeout 120 $GEN_CPU curl -s -o /dev/null -H 'Expect:' -X POST -T "$TMP/big" "$uurl" >>"$LOG" 2>&1
            sleep 0.5
            stop_pid "$sp"
            BG[$s,rx]=$(awk '/ = [0-9]+$/ { n += $NF } END { printf "%d", n }' "$TMP/rx")
            log "$s read $(printf '%s' "${BG[$s,rx]}") bytes during one upload of $BIG (strace)"
            [ "${BG[$s,rx]}" -ge "$BIG" ] || { note "problem: $s read only ${BG[$s,rx]} bytes of a $BIG-byte upload"; BIGCHK="$BIGCHK $s-recv"; }
        fi
        log "100 MiB $s: send ${BG[$s,send]} ms/transfer (VmHWM ${BG[$s,hwm]} kB), recv ${BG[$s,recv]} ms/transfer (read ${BG[$s,rchar]} bytes each, VmHWM ${BG[$s,rhwm]} kB)"
        if [ "$s" = nginx ]; then # the client receiving, from this nginx
            for c in fetch curl; do
                tu=0
                mr=0
                for _ in $(seq "$REPS"); do
                    if [ "$c" = fetch ]; then
                        # shellcheck disable=SC2086
                        timeout 120 $GEN_CPU /usr/bin/time -o "$TMP/time" -f '%U %S %M' "$B/fetch" "$url" >/dev/null 2>>"$LOG"
                    else
                        # shellcheck disable=SC2086
                        timeout 120 $GEN_CPU /usr/bin/time -o "$TMP/time" -f '%U %S %M' curl -s -o /dev/null "$url" 2>>"$LOG"
                    fi || { note "problem: $c download failed"; BIGCHK="$BIGCHK $c"; }
                    read -r u sy m <"$TMP/time"
                    tu=$(awk -v a="$tu" -v u="$u" -v s="$sy" 'BEGIN { printf "%d", a + (u + s) * 1000 + 0.5 }')
                    [ "$m" -gt "$mr" ] && mr=$m
                done
                BG[$c,cpu]=$((tu / REPS))
                BG[$c,rss]=$mr
                log "client $c: ${BG[$c,cpu]} ms per download, max RSS $mr kB"
            done
        fi
        stop_pid "$pid"
    done
    rm -f "$TMP/big"
    [ -x /usr/bin/time ] || note "skipped: /usr/bin/time not installed (client CPU)"
    printf 'counts: 100 MiB done (%ss)\n' $(($(date +%s) - T0)) >&2
fi

# ---- 5: text size --------------------------------------------------------------------------
SZ_FLAGS="-Os -ffunction-sections -fdata-sections -Wl,--gc-sections -s"
SMALL="-DTN_HTTP_MINIMAL -DTN_NO_HTTP_CLIENT -DTN_NO_TCP -DTN_NO_EXECUTOR -DTN_NO_SIGNALS -DTN_NO_THREADS -DTN_BACKEND_POLL"
CORE="-DTN_NO_HTTP_SERVER -DTN_NO_HTTP_CLIENT -DTN_NO_TCP -DTN_NO_EXECUTOR -DTN_NO_SIGNALS -DTN_NO_THREADS"
printf 'int main(void) { return 0; }\n' >"$TMP/empty.c"
declare -A SZ
text_of() { size "$B/$1" 2>/dev/null | awk 'NR == 2 { print $1 }'; }
if have size; then
    # shellcheck disable=SC2086
    build sz-default ../examples/hello.c $SZ_FLAGS -pthread && SZ[default]=$(text_of sz-default)
    # shellcheck disable=SC2086
    build sz-minimal ../examples/hello.c $SZ_FLAGS -DTN_HTTP_MINIMAL -pthread && SZ[minimal]=$(text_of sz-minimal)
    # shellcheck disable=SC2086
    build sz-smallest ../examples/hello.c $SZ_FLAGS $SMALL && SZ[smallest]=$(text_of sz-smallest)
    # shellcheck disable=SC2086
    build sz-core coremin.c $SZ_FLAGS -std=c99 -D_GNU_SOURCE $CORE && SZ[core]=$(text_of sz-core)
    # shellcheck disable=SC2086
    build sz-empty "$TMP/empty.c" $SZ_FLAGS && SZ[empty]=$(text_of sz-empty)
    # The same with -g (no more code: only sections size leaves out) for layers.sh's table.
    LAYERS=
    # shellcheck disable=SC2086
    if have nm && build ly-hello ../examples/hello.c ${SZ_FLAGS% -s} -g -pthread &&
        build ly-minimal ../examples/hello.c ${SZ_FLAGS% -s} -g -DTN_HTTP_MINIMAL -pthread &&
        build ly-smallest ../examples/hello.c ${SZ_FLAGS% -s} -g $SMALL &&
        build ly-core coremin.c ${SZ_FLAGS% -s} -g -std=c99 -D_GNU_SOURCE $CORE; then
        LAYERS=$(bash ./layers.sh "$B/ly-hello" "$B/ly-minimal" "$B/ly-smallest" "$B/ly-core" 2>>"$LOG") || LAYERS=
    fi
    [ -n "${COUNTS_TSV:-}" ] && [ -n "${SZ[default]:-}" ] && printf 'tornado.h\tsize_text\t%s\t0\n' "${SZ[default]}" >>"$COUNTS_TSV"
else
    note "skipped: size not installed (binutils: text sizes)"
fi

# ---- the tables ----------------------------------------------------------------------------
cell() { [ -n "${1:-}" ] && printf '%s' "$1" || printf -- '-'; }
ratio() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'; }
NG=nginx
[ $HAVE_NGINX = 1 ] || NG=
{
    echo "Deterministic figures (bench/counts.sh), $(date -u '+%Y-%m-%d %H:%M UTC'), $(${CC} --version 2>/dev/null | head -n 1)."
    echo "Per request: (count with N2 = $N2 requests - count with N1 = $N1) / $((N2 - N1)), each server started afresh per count, on one"
    echo "connection (keep-alive: one request at a time; pipelined: 16 per write) or one connection per request (ab's request bytes, HTTP/1.0)."
    echo "Instructions: valgrind --tool=callgrind, the server's user space (Ir). Syscalls: strace -f -c. Allocations: valgrind memcheck."
    echo
    echo "| figure | pattern | tornado.h | nginx | floor | ceiling | tornado.h / nginx | tornado.h / floor |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    if [ $HAVE_VG = 1 ]; then
        for p in $PATTERNS; do
            echo "| instructions per request | $(pat_name $p) | $(cell "${IR[tornado.h,$p]:-}") | $(cell "${IR[nginx,$p]:-}") | $(cell "${IR[floor,$p]:-}") | $(cell "${IR[ceiling,$p]:-}") | $(ratio "${IR[tornado.h,$p]:-}" "${IR[nginx,$p]:-}") | $(ratio "${IR[tornado.h,$p]:-}" "${IR[floor,$p]:-}") |"
        done
    else
        echo "| instructions per request | all | skipped: valgrind not installed | | | | | |"
    fi
    if [ $HAVE_ST = 1 ]; then
        for p in $PATTERNS; do
            echo "| syscalls per request | $(pat_name $p) | $(cell "${SC[tornado.h,$p]:-}") | $(cell "${SC[nginx,$p]:-}") | $(cell "${SC[floor,$p]:-}") | $(cell "${SC[ceiling,$p]:-}") | $(ratio "${SC[tornado.h,$p]:-}" "${SC[nginx,$p]:-}") | $(ratio "${SC[tornado.h,$p]:-}" "${SC[floor,$p]:-}") |"
        done
        for p in $PATTERNS; do
            echo "| syscalls per request, by call | $(pat_name $p) | $(cell "${SCB[tornado.h,$p]:-}") | $(cell "${SCB[nginx,$p]:-}") | $(cell "${SCB[floor,$p]:-}") | $(cell "${SCB[ceiling,$p]:-}") | | |"
        done
    else
        echo "| syscalls per request | all | skipped: strace not installed | | | | | |"
    fi
    if [ $HAVE_VG = 1 ]; then
        for p in $PATTERNS; do
            a=${AL[tornado.h,$p]:-}
            [ "$a" = 0.000 ] && a=0
            [ "$p" != ab ] && [ -n "$a" ] && { [ "$a" = 0 ] && a="0 (must be 0: met)" || a="$a (must be 0: **missed**)"; }
            echo "| heap allocations per request (server, memcheck) | $(pat_name $p) | $(cell "$a") | - | - | - | | |"
        done
    fi
    echo
    if [ $HAVE_VG = 1 ]; then
        echo "Client (bench/fetchn.c: sequential tn_http_fetch on one tn_http_client, GET / of examples/hello, pooled keep-alive connection):"
        echo
        echo "| figure | tornado.h client |"
        echo "|---|---:|"
        echo "| heap allocations per fetch (memcheck) | $(cell "$CL_AL") |"
        echo "| instructions per fetch (callgrind, user space) | $(cell "$CL_IR") |"
    else
        echo "Client per fetch: skipped: valgrind not installed."
    fi
    echo
    MIB=$(awk -v b="$BIG" 'BEGIN { printf "%g MiB", b / 1048576 }')
    if have curl; then
        echo "$MIB each direction, $REPS transfers per cell, CPU per transfer (utime+stime from /proc/PID/stat; clients: user+sys"
        echo "from /usr/bin/time), peak RSS (VmHWM; clients: max RSS). tornado.h: examples/httpbin (GET /bytes/N, a coroutine writing"
        echo "16 KiB pieces; GET /static/big with sendfile; POST /upload, streamed to on_body, which sums an Adler-32 of every byte), examples/fetch. nginx: a file"
        echo "with sendfile on; a location with \`client_max_body_size 0; return 200\` (it reads and discards the body: checked on one"
        echo "more upload with strace attached, summing what its reads returned: ${BG[nginx,rx]:-?} bytes; httpbin ${BG[httpbin,rx]:-?}). curl -T without Expect: 100-continue."
        echo
        echo "| transfer | tornado.h CPU, ms | peer CPU, ms | CPU ratio | tornado.h peak RSS, KiB | peer peak RSS, KiB | RSS ratio |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        echo "| server sending a file (both: sendfile; httpbin --static) | $(cell "${BG[httpbin,sendf]:-}") | $(cell "${BG[nginx,send]:-}") | $(ratio "${BG[httpbin,sendf]:-}" "${BG[nginx,send]:-}") | | | |"
        echo "| server sending generated bytes (/bytes/N; peer: nginx, a file, sendfile) | $(cell "${BG[httpbin,send]:-}") | $(cell "${BG[nginx,send]:-}") | $(ratio "${BG[httpbin,send]:-}" "${BG[nginx,send]:-}") | $(cell "${BG[httpbin,hwm]:-}") | $(cell "${BG[nginx,hwm]:-}") | $(ratio "${BG[httpbin,hwm]:-}" "${BG[nginx,hwm]:-}") |"
        echo "| server receiving (peer: nginx, discarding) | $(cell "${BG[httpbin,recv]:-}") | $(cell "${BG[nginx,recv]:-}") | $(ratio "${BG[httpbin,recv]:-}" "${BG[nginx,recv]:-}") | $(cell "${BG[httpbin,rhwm]:-}") | $(cell "${BG[nginx,rhwm]:-}") | $(ratio "${BG[httpbin,rhwm]:-}" "${BG[nginx,rhwm]:-}") |"
        if [ -x /usr/bin/time ] && [ -n "$NG" ]; then
            echo "| client receiving, from nginx (peer: curl) | $(cell "${BG[fetch,cpu]:-}") | $(cell "${BG[curl,cpu]:-}") | $(ratio "${BG[fetch,cpu]:-}" "${BG[curl,cpu]:-}") | $(cell "${BG[fetch,rss]:-}") | $(cell "${BG[curl,rss]:-}") | $(ratio "${BG[fetch,rss]:-}" "${BG[curl,rss]:-}") |"
        else
            echo "| client receiving | skipped: nginx or /usr/bin/time not installed | | | | | |"
        fi
        [ -n "$BIGCHK" ] && echo && echo "**Problems in the transfers:**$BIGCHK (see the log)."
    else
        echo "$MIB transfers: skipped: curl not installed."
    fi
    echo
    if have size; then
        echo "Text size (\`size\`, text column: code, read-only data, unwind and dynamic-linking tables), built \`$CC $SZ_FLAGS\`:"
        echo
        echo "| program | macros | text, bytes | target | verdict |"
        echo "|---|---|---:|---:|---|"
        verdict() { awk -v v="${1:-}" -v t="$2" 'BEGIN { if (v == "") print "not measured"; else if (v + 0 <= t) print "met"; else print "**missed**" }'; }
        echo "| examples/hello | (default) -pthread | $(cell "${SZ[default]:-}") | 24576 (24 KiB) | $(verdict "${SZ[default]:-}" 24576) |"
        echo "| examples/hello | -DTN_HTTP_MINIMAL -pthread | $(cell "${SZ[minimal]:-}") | - | - |"
        echo "| examples/hello, smallest server | ${SMALL//-D/} | $(cell "${SZ[smallest]:-}") | 12288 (12 KiB) | $(verdict "${SZ[smallest]:-}" 12288) |"
        echo "| bench/coremin.c (a coroutine awaiting a timer) | ${CORE//-D/} | $(cell "${SZ[core]:-}") | 6144 (6 KiB) | $(verdict "${SZ[core]:-}" 6144) |"
        echo "| int main(void) { return 0; } | - | $(cell "${SZ[empty]:-}") | - | baseline |"
        echo
        if [ -n "$LAYERS" ]; then
            echo "The same text by layer of tornado.h (bench/layers.sh: each function and read-only object to the header"
            echo "section it is defined in; ly-hello, ly-minimal, ly-smallest and ly-core are the four programs above):"
            echo
            echo "$LAYERS"
        else
            echo "Text by layer: skipped: nm not installed, or a -g build failed (see the log)."
        fi
    else
        echo "Text size: skipped: size not installed."
    fi
} >"$TMP/counts.md"
cat "$TMP/counts.md"
cat "$TMP/counts.md" >>"$LOG"
printf 'counts: total %ss\n' $(($(date +%s) - T0)) >&2
