#!/bin/sh
# Every symbol the implementation exports starts with tn_ (nm on an object).
set -u
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '#define TORNADO_IMPLEMENTATION\n#include "tornado.h"\n' > "$tmp/impl.c"
fail=0
for cfg in "" "-DTN_BACKEND_POLL" "-DTN_NO_THREADS"; do
    cc -std=c99 $cfg -I. -c "$tmp/impl.c" -o "$tmp/impl.o" || exit 1
    bad=$(nm -g --defined-only "$tmp/impl.o" | awk '{print $3}' | grep -v '^tn_' || true)
    if [ -n "$bad" ]; then echo "exported symbols without the tn_ prefix ($cfg):"; echo "$bad"; fail=1; fi
    count=$(nm -g --defined-only "$tmp/impl.o" | wc -l)
    echo "symbols ${cfg:-default}: $count exported, all tn_-prefixed: $([ -z "$bad" ] && echo yes || echo no)"
done
exit $fail
