#!/usr/bin/env bash
# Instructions per allowed decision (one limit + one regex condition), counted by callgrind:
# exact and repeatable on a shared machine where time is not. Each commit's core is built
# from a clean export (bench/build_decide_loop.sh) with the working tree's
# `rust/core/examples/decide_loop.rs`, which decides N calls; only its loop is counted
# (callgrind's --toggle-collect), so loading the policy, the clock's calibration and start-up
# are not.
#
#   bench/instructions.sh                    # HEAD
#   bench/instructions.sh d6320a8 HEAD       # several commits, one line each
#
# Needs valgrind (Debian: valgrind). Takes ~1 min per commit, most of it the build; the
# uncommitted core is not measured.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${N:-20000}
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed" >&2; exit 2; }
(($# > 0)) || set -- HEAD

count() { # count BINARY DECISIONS: instructions executed in the decision loop
    valgrind --tool=callgrind --toggle-collect='decide_loop::decide_all' \
        --callgrind-out-file=/dev/null "$1" "$2" 2>&1 |
        awk '/Collected/ { print $4 }'
}

for rev in "$@"; do
    commit=$(git rev-parse --short "$rev")
    bin=$(bench/build_decide_loop.sh "$commit")
    total=$(count "$bin" "$n")
    if ((total == 0)); then
        echo "instructions.sh: no instructions counted in $commit's decide_all loop" >&2
        exit 1
    fi
    echo "$commit $(( total / n )) instructions per decision"
done
