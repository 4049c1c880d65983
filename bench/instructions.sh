#!/usr/bin/env bash
# Instructions per allowed decision (one limit + one regex condition), counted by callgrind:
# exact and repeatable on a shared machine where time is not. Each commit is built from a
# clean export under target/instructions/, and `rust/core/examples/decide_loop.rs` decides N
# calls; only its loop is counted (callgrind's --toggle-collect), so loading the policy, the
# clock's calibration and start-up are not. Commits before the one adding this script had an
# example without that loop function: measure those with this commit's example copied in.
#
#   bench/instructions.sh                    # HEAD
#   bench/instructions.sh d6320a8 HEAD       # several commits, one line each
#
# Needs valgrind (Debian: valgrind). Takes ~1 min per commit, most of it the build; the
# uncommitted tree is not measured.
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
    src="target/instructions/$commit/src"
    target="$PWD/target/instructions/$commit/target"
    if [[ ! -d "$src" ]]; then
        mkdir -p "$src"
        # -m: fresh file times, so cargo never takes another commit's build for this one's.
        git archive "$commit" | tar -x -m -C "$src"
    fi
    (cd "$src" && CARGO_TARGET_DIR="$target" cargo build -q --release -p toolgate-core --example decide_loop)
    bin="$target/release/examples/decide_loop"
    total=$(count "$bin" "$n")
    if ((total == 0)); then
        echo "instructions.sh: $commit's decide_loop example has no decide_all loop to count" >&2
        exit 1
    fi
    echo "$commit $(( total / n )) instructions per decision"
done
