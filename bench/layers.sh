#!/bin/bash
# The code of a program that uses tornado.h, by layer of the header.
#
#   sh layers.sh BINARY [BINARY...]
#
# Each BINARY is built with -g as well as the size flags (-g adds no code:
# only sections `size` does not count). Every function and read-only object
# nm finds is given to the header section its first line is in (the section
# banners of tornado.h, listed below in reading order); what the header
# inlines counts in the function it was inlined into. What no symbol owns
# (string literals and the C runtime's start-up, unwind tables, dynamic-
# linking tables) is in the last three rows, so the column adds up to
# `size`'s text. Prints a markdown table, one column per binary.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
HDR="$HERE/../tornado.h"

# banner regex (a line of tornado.h) -> layer; a layer may own several
# sections, in any order.
BANNERS='-- allocation|loop
-- signals|signals
-- loop lifecycle|loop
-- futures \*/|futures
-- combinators \*/|futures
-- coroutines \*/|coroutines
-- executor \*/|executor
-- Event, Queue \*/|Event, Queue
^ \* STREAMS: |streams
^/\* =+ TLS|TLS
-- connector|streams
^/\* tornado.h HTTP/1.1 message parser|HTTP parser, body reader
^/\* =+ HTTP server|HTTP server
-- routing \*/|routing
-- request arena|HTTP server
-- arguments|web: arguments, forms, multipart
-- cookies \*/|web: cookies, auth, conditional, log, JSON
-- connections \*/|HTTP server
-- response cache|response cache
-- accept, listen \*/|HTTP server
-- static files|static files
-- shutdown, free \*/|HTTP server
-- accessors \*/|HTTP server
^/\* =+ CACHE|tn_cache
^/\* =+ HTTP client|HTTP client'

# the first line matching each, after the implementation begins
impl=$(grep -n -m1 '^#ifdef TORNADO_IMPLEMENTATION' "$HDR" | cut -d: -f1)
starts=$(echo "$BANNERS" | while IFS='|' read -r re layer; do
    n=$(awk -v s="$impl" -v re="$re" 'NR > s && $0 ~ re { print NR; exit }' "$HDR")
    [ -n "$n" ] || { echo "layers.sh: no banner /$re/ in tornado.h" >&2; exit 1; }
    printf '%s\t%s\n' "$n" "$layer"
done | sort -n)

for bin in "$@"; do
    total=$(size "$bin" | awk 'NR == 2 { print $1 }')
    # sections no symbol owns: unwind tables, and what dynamic linking needs
    unwind=$(size -A "$bin" | awk '$1 ~ /^\.eh_frame/ { n += $2 } END { print n + 0 }')
    linking=$(size -A "$bin" | awk '$1 ~ /^\.(interp|note|gnu\.|dynsym|dynstr|rela|plt|init$|fini$)/ { n += $2 } END { print n + 0 }')
    nm -S -t d -l --defined-only "$bin" | awk -v total="$total" -v unwind="$unwind" -v linking="$linking" \
        -v bin="$bin" -v starts="$starts" '
        BEGIN {
            n = split(starts, rows, "\n")
            for (i = 1; i <= n; i++) { split(rows[i], f, "\t"); line[i] = f[1] + 0; name[i] = f[2] }
        }
        NF >= 4 && $3 ~ /^[tTrR]$/ {
            size = $2 + 0; where = $NF; layer = "-"
            if (where ~ /tornado\.h:[0-9]+$/) {
                sub(/.*tornado\.h:/, "", where); l = where + 0; layer = "(configuration, helpers)"
                for (i = 1; i <= n; i++) if (line[i] <= l) layer = name[i]
            } else if (where ~ /\.c:[0-9]+$/) layer = "the program"
            if (layer == "-") next
            sum[layer] += size; owned += size
        }
        END {
            for (k in sum) printf "%s\t%s\t%d\n", bin, k, sum[k]
            printf "%s\t%s\t%d\n", bin, "~unwind", unwind
            printf "%s\t%s\t%d\n", bin, "~linking", linking
            printf "%s\t%s\t%d\n", bin, "~other", total - owned - unwind - linking
            printf "%s\t%s\t%d\n", bin, "~total", total
        }'
done | awk -F'\t' -v starts="$starts" '
    BEGIN {
        n = split(starts, rows, "\n"); m = 0
        order[++m] = "(configuration, helpers)"
        for (i = 1; i <= n; i++) { split(rows[i], f, "\t"); if (!(f[2] in seen)) { seen[f[2]] = 1; order[++m] = f[2] } }
        order[++m] = "the program"; order[++m] = "~other"; order[++m] = "~unwind"; order[++m] = "~linking"
        order[++m] = "~total"
    }
    { if (!($1 in col)) { col[$1] = ++nb; bins[nb] = $1 } v[$2, $1] = $3 }
    END {
        printf "| layer |"; for (b = 1; b <= nb; b++) { x = bins[b]; sub(/.*\//, "", x); printf " %s |", x }; print ""
        printf "|---|"; for (b = 1; b <= nb; b++) printf "---:|"; print ""
        for (i = 1; i <= m; i++) {
            k = order[i]; any = 0
            for (b = 1; b <= nb; b++) if (v[k, bins[b]] != "") any = 1
            if (!any) continue
            label = k
            if (k == "~other") label = "string literals, C runtime start-up"
            if (k == "~unwind") label = "unwind tables (.eh_frame)"
            if (k == "~linking") label = "dynamic-linking tables (.dynsym, .plt, ...)"
            if (k == "~total") label = "**text (`size`)**"
            printf "| %s |", label
            for (b = 1; b <= nb; b++) { c = v[k, bins[b]]; printf " %s |", (c == "" ? "-" : c) }
            print ""
        }
    }'
