#!/usr/bin/env bash
# Build this tree's `decide_loop` example against COMMIT's core, from a clean export under
# target/decide-loop/<commit>/ (so uncommitted changes never leak in), and print the
# binary's path. Used by instructions.sh and ab_loop.sh. The example comes from the working
# tree, so commits older than it can be measured the same way, as long as the core's public
# API it uses is theirs too.
#
#   bench/build_decide_loop.sh HEAD~3
set -euo pipefail
cd "$(dirname "$0")/.."

commit=$(git rev-parse --short "${1:?usage: bench/build_decide_loop.sh COMMIT}")
root="$PWD/target/decide-loop/$commit"
if [[ ! -d "$root/src" ]]; then
    mkdir -p "$root/src"
    # -m: fresh file times, so cargo never takes another commit's build for this one's.
    git archive "$commit" | tar -x -m -C "$root/src"
fi
cp rust/core/examples/decide_loop.rs "$root/src/rust/core/examples/decide_loop.rs"
(cd "$root/src" && CARGO_TARGET_DIR="$root/target" \
    cargo build -q --release -p toolgate-core --example decide_loop >&2)
echo "$root/target/release/examples/decide_loop"
