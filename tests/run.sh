#!/bin/sh
# Runs each test binary given (under valgrind when TN_VALGRIND=1) and ends
# with the sum of their results as one line "N passed, N failed".
passed=0; failed=0; skipped=0; status=0
for bin in "$@"; do
    echo "== $bin"
    if [ "${TN_VALGRIND:-0}" = 1 ]; then
        if ! command -v valgrind >/dev/null 2>&1; then
            echo "skipped: valgrind not installed"
            if [ "${CI:-}" = true ]; then failed=$((failed + 1)); status=1; fi
            continue
        fi
        out=$(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
              --show-leak-kinds=definite,indirect --track-fds=no "$bin" 2>&1)
        rc=$?
    else
        out=$("$bin" 2>&1)
        rc=$?
    fi
    printf '%s\n' "$out" | sed '$d'
    last=$(printf '%s\n' "$out" | tail -n 1)
    echo "   ($bin) $last"
    p=$(printf '%s\n' "$last" | sed -n 's/^\([0-9]*\) passed.*/\1/p')
    f=$(printf '%s\n' "$last" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
    s=$(printf '%s\n' "$last" | sed -n 's/.* \([0-9]*\) skipped.*/\1/p')
    if [ -z "$p" ] || [ -z "$f" ]; then
        echo "   $bin did not finish (exit $rc)"
        failed=$((failed + 1)); status=1; continue
    fi
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + ${s:-0}))
    [ "$rc" = 0 ] || status=1
done
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
exit $status
