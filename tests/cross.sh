#!/bin/sh
# The suite on other machines: cross-compiled for 32-bit ARM (ILP32, armhf)
# and 64-bit big-endian s390x, both backends, run under qemu-user; then the
# POSIX-only compile (what a BSD or macOS build sees).
#   sh tests/cross.sh [sources...]   (the Makefile passes TEST_SRCS)
# Run from the repository root. Builds tests/tn_tests-<arch>-<backend> with
# the native suite's flags, and per arch a directory tests/cross/<arch>/ the
# suite runs in, laid out like the repository root:
#   examples/<name>   a script running examples/<name>.bin (the example built
#                     for <arch>) under qemu, so the interop and example tests
#                     exec the cross-built httpbin, fetch and crawler;
#   bin/cc            on PATH during the run: a cc that builds for <arch>
#                     and leaves a qemu script at -o (the README example test
#                     compiles with `cc` and runs the result);
#   tests/readme_example.c, tornado.h: links to the real ones;
#   tn_tests-<arch>-<backend>: runs the suite binary under qemu.
# Host tools the tests exec (curl, wrk, ab, python3, nginx) stay native: an
# emulated process may exec a native binary. No binfmt_misc is needed.
# A rerun by hand: cd tests/cross/arm && PATH=$PWD/bin:$PATH ./tn_tests-arm-epoll NAME
# Missing tools print "skipped: <tool> not installed" (a failure under CI=true).
# Ends with "N passed, N failed": the tests of the four suite runs (a build
# that fails, or a POSIX-only failure, counts as one failed).
set -u
root=$(pwd)
[ -f "$root/tornado.h" ] && [ -f "$root/tests/run.sh" ] || { echo "run from the repository root"; exit 2; }
if [ $# -gt 0 ]; then srcs="$*"; else srcs="$(ls tests/test_*.c | sort) tests/main.c tests/impl.c"; fi
WARN="-std=c99 -Wall -Wextra -Wpedantic -Werror"
XCFLAGS="-O2 -D_GNU_SOURCE -DTN_TEST_TIMEOUT_S=${TN_TEST_TIMEOUT_S:-60}"
passed=0; failed=0; skipped=0; status=0

build() { # out cc args...: compiles; on failure the first lines of the errors
    bout=$1; shift
    if "$@" -o "$bout" 2>"$root/tests/cross/err"; then rm -f "$root/tests/cross/err"; return 0; fi
    echo "   FAILED to build $bout:"; sed 's/^/      /' "$root/tests/cross/err" | head -25
    failed=$((failed + 1)); status=1; return 1
}
skip() { # a missing tool: a skip locally, a failure under CI=true
    echo "skipped: $1 not installed"
    if [ "${CI:-}" = true ]; then failed=$((failed + 1)); status=1; else skipped=$((skipped + 1)); fi
}
have() { command -v "$1" >/dev/null 2>&1; }

run_arch() { # arch gcc-triplet qemu-name libc6-dev-package
    arch=$1; triplet=$2; qname=$3; devpkg=$4
    xcc=$triplet-gcc; prefix=/usr/$triplet
    echo "==== $arch ($xcc, $qname -L $prefix)"
    have "$xcc" || { skip "$xcc"; return; }
    [ -f "$prefix/include/stdio.h" ] || { skip "$devpkg"; return; }
    if have "$qname"; then qemu=$(command -v "$qname")
    elif have "$qname-static"; then qemu=$(command -v "$qname-static")
    else skip "$qname"; return; fi
    dir=tests/cross/$arch
    rm -rf "$dir"
    mkdir -p "$dir/examples" "$dir/tests" "$dir/bin"
    ln -s "$root/tornado.h" "$dir/tornado.h"
    ln -s "$root/tests/readme_example.c" "$dir/tests/readme_example.c"
    ln -s "$root/tests/httpbin_diff.py" "$dir/tests/httpbin_diff.py"
    bins=""
    for backend in epoll poll; do
        bin=tests/tn_tests-$arch-$backend
        cfg=""; [ $backend = poll ] && cfg="-DTN_BACKEND_POLL"
        echo "   build $bin"
        # shellcheck disable=SC2086
        build "$bin" $xcc $WARN $XCFLAGS $cfg $srcs -pthread || continue
        printf '#!/bin/sh\nexec %s -L %s %s "$@"\n' "$qemu" "$prefix" "$root/$bin" > "$dir/tn_tests-$arch-$backend"
        chmod +x "$dir/tn_tests-$arch-$backend"
        bins="$bins ./tn_tests-$arch-$backend"
    done
    for src in examples/*.c; do
        name=$(basename "$src" .c)
        # shellcheck disable=SC2086
        build "$dir/examples/$name.bin" $xcc $WARN -O2 "$src" -pthread || continue
        printf '#!/bin/sh\nexec %s -L %s %s "$@"\n' "$qemu" "$prefix" "$root/$dir/examples/$name.bin" > "$dir/examples/$name"
        chmod +x "$dir/examples/$name"
    done
    # cc: the same arguments with -o X turned into -o X.bin, then X runs X.bin under qemu
    cat > "$dir/bin/cc" <<EOF
#!/bin/sh
out=a.out; n=\$#
while [ \$n -gt 0 ]; do
    a=\$1; shift; n=\$((n - 1))
    if [ "\$a" = -o ] && [ \$n -gt 0 ]; then out=\$1; shift; n=\$((n - 1)); set -- "\$@" -o "\$out.bin"
    else set -- "\$@" "\$a"; fi
done
$xcc "\$@" || exit \$?
printf '#!/bin/sh\nexec %s -L %s "%s" "\$@"\n' "$qemu" "$prefix" "\$(cd "\$(dirname "\$out")" && pwd)/\$(basename "\$out").bin" > "\$out"
chmod +x "\$out"
EOF
    chmod +x "$dir/bin/cc"
    [ -n "$bins" ] || return
    # shellcheck disable=SC2086
    out=$(cd "$dir" && PATH="$root/$dir/bin:$PATH" sh "$root/tests/run.sh" $bins 2>&1)
    rc=$?
    printf '%s\n' "$out"
    last=$(printf '%s\n' "$out" | tail -n 1)
    p=$(printf '%s\n' "$last" | sed -n 's/^\([0-9]*\) passed.*/\1/p')
    f=$(printf '%s\n' "$last" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
    s=$(printf '%s\n' "$last" | sed -n 's/.* \([0-9]*\) skipped.*/\1/p')
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-1})); skipped=$((skipped + ${s:-0}))
    [ "$rc" = 0 ] || status=1
}

start=$(date +%s)
mkdir -p tests/cross
# The header must build natively first (else every cross build says the same).
printf '#define TORNADO_IMPLEMENTATION\n#include "../../tornado.h"\n' > tests/cross/impl.c
if ! build tests/cross/impl.o cc $WARN -O0 -c tests/cross/impl.c; then
    echo "tornado.h does not build natively: nothing cross-built"; echo "$passed passed, $failed failed"; exit 1
fi
rm -f tests/cross/impl.c tests/cross/impl.o
run_arch arm arm-linux-gnueabihf qemu-arm libc6-dev-armhf-cross
run_arch s390x s390x-linux-gnu qemu-s390x libc6-dev-s390x-cross
echo "   (builds and suites under qemu: $(( $(date +%s) - start ))s)"

# ---- POSIX only -----------------------------------------------------------
# The implementation with TN_POSIX_ONLY (TN__LINUX 0) and the poll backend,
# warning-free without -D_GNU_SOURCE; then with glibc held to POSIX.1-2008
# declarations with the XSI option (_XOPEN_SOURCE 700: what BSD and macOS
# offer; realpath is XSI) (features.h read first, so the header's own _GNU_SOURCE comes
# too late): any GNU or Linux-only call left is an implicit declaration. Last,
# the header's own text as that configuration leaves it (system headers
# dropped, the Linux macros defined, preprocessed) must name none of the
# Linux-only identifiers (without TN_POSIX_ONLY it names them all).
echo "==== POSIX only (-DTN_POSIX_ONLY -DTN_BACKEND_POLL)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '#define TORNADO_IMPLEMENTATION\n#include "tornado.h"\nint main(void) { return 0; }\n' > "$tmp/impl.c"
pfail=0; n=0
for cc in gcc clang; do
    have $cc || { skip $cc; continue; }
    for thr in "" "-DTN_NO_THREADS"; do
        for feat in "" "-D_XOPEN_SOURCE=700 -include features.h"; do
            n=$((n + 1))
            # shellcheck disable=SC2086
            if ! $cc $WARN $feat $thr -DTN_POSIX_ONLY -DTN_BACKEND_POLL -I. -c "$tmp/impl.c" -o "$tmp/o.o" 2>"$tmp/err"; then
                echo "FAIL: $cc $feat $thr"; sed 's/^/    /' "$tmp/err" | head -20; pfail=1
            fi
        done
    done
done
# (MSG_NOSIGNAL is POSIX.1-2008: not in the list.)
linux_only='accept4|SOCK_NONBLOCK|SOCK_CLOEXEC|MSG_MORE|[a-z_]*epoll[a-z_]*|EPOLL[A-Z_]*|eventfd[a-z_]*|EFD_[A-Z_]*|signalfd[a-z_]*|SFD_[A-Z_]*|signalfd_siginfo|TIOCOUTQ|SIOCOUTQ|sendfile|pipe2|dup3|prctl|PR_SET_[A-Z_]*|memrchr|rawmemchr|strchrnul|strcasestr|mempcpy|TCP_CORK|TCP_QUICKACK|timerfd[a-z_]*|CLOCK_MONOTONIC_(RAW|COARSE)|CLOCK_BOOTTIME|ppoll|splice|vmsplice|gettid|pthread_setname_np|MSG_ZEROCOPY'
# As if the Linux headers defined these, so code under "#if defined(X)" shows.
linux_defs="-DMSG_MORE=MSG_MORE -DTIOCOUTQ=TIOCOUTQ -DSIOCOUTQ=SIOCOUTQ
 -DSOCK_NONBLOCK=SOCK_NONBLOCK -DSOCK_CLOEXEC=SOCK_CLOEXEC -DEPOLLIN=EPOLLIN -DEFD_NONBLOCK=EFD_NONBLOCK
 -DSFD_NONBLOCK=SFD_NONBLOCK"
for thr in "" "-DTN_NO_THREADS"; do
    grep -v '^[[:space:]]*#[[:space:]]*include[[:space:]]*<' tornado.h > "$tmp/noinc.h"
    n=$((n + 1))
    # shellcheck disable=SC2086
    if ! gcc -E -P $linux_defs $thr -DTORNADO_IMPLEMENTATION -DTN_POSIX_ONLY -DTN_BACKEND_POLL "$tmp/noinc.h" -o "$tmp/pp.c" 2>"$tmp/err"; then
        echo "FAIL: preprocessing tornado.h $thr"; sed 's/^/    /' "$tmp/err" | head; pfail=1; continue
    fi
    hits=$(grep -n -o -w -E "$linux_only" "$tmp/pp.c" | sort -t: -k2 -u | sed 's/^[0-9]*://' | tr '\n' ' ')
    if [ -n "$hits" ]; then echo "FAIL: Linux-only identifiers outside TN__LINUX $thr: $hits"; pfail=1; fi
done
echo "posix-only: $n checks, $([ $pfail = 0 ] && echo all clean || echo FAILURES)"
[ $pfail = 0 ] || { failed=$((failed + 1)); status=1; }

echo "   (check-cross: $(( $(date +%s) - start ))s)"
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
exit $status
