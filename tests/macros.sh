#!/bin/sh
# Every configuration macro the code tests (#ifdef/#ifndef/defined() of a
# TN_ name: the ones a user can define) is in the manual (the opening
# comment of tornado.h) and in README.md, so the three cannot drift apart.
cd "$(dirname "$0")/.." || exit 1
manual=$(awk '/^#ifndef TORNADO_H/ { exit } { print }' tornado.h)
macros=$(grep -oE '^[[:space:]]*#[[:space:]]*(ifdef|ifndef|if|elif).*' tornado.h |
    grep -oE '\bTN_[A-Z0-9_]+' | grep -v '^TN__' | grep -v '^TN_API$\|^TORNADO' | sort -u)
fail=0
n=0
for m in $macros; do
    n=$((n + 1))
    printf '%s\n' "$manual" | grep -q "\\b$m\\b" || { echo "not in the manual: $m"; fail=1; }
    grep -q "\\b$m\\b" README.md || { echo "not in README.md: $m"; fail=1; }
done
echo "configuration macros: $n, $([ $fail = 0 ] && echo 'all in the manual and README' || echo MISSING)"
exit $fail
