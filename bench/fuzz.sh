#!/usr/bin/env bash
# Fuzz what toolgate reads from the outside, each target for SECONDS (default 600), one after
# the other (the machine has two cores; fuzzing two at once halves each):
#   body_reader    the MCP request body reader (and that serde_json reads what it accepts alike)
#   policy_loader  the policy loader, JSON and YAML (and that what loads compiles and decides)
#   wire_decoder   the gRPC requests: toolgate.v1 Decide/DecideBatch/Release, Check, ShouldRateLimit
#
#   bench/fuzz.sh [SECONDS] [TARGET...]
#
# Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`). Builds with optimisations and debug assertions (overflow
# checks on). Each corpus grows in target/fuzz-corpus/TARGET from the seeds in
# rust/fuzz/seeds/TARGET (rust/fuzz/make_seeds.py writes them); a crash is saved in
# rust/fuzz/artifacts/TARGET and ends that target's run. Prints one line per target: time,
# runs, corpus size, crashes.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,14p' "$0"; exit 0; }

seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(body_reader policy_loader wire_decoder)

summary=()
for t in "${targets[@]}"; do
    corpus=target/fuzz-corpus/$t
    log=target/fuzz-$t.log
    mkdir -p "$corpus"
    status=0
    cargo +nightly fuzz run --fuzz-dir rust/fuzz -O -a "$t" "$corpus" "rust/fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log" | tail -n 1)
    crashes=$(find "rust/fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)
    summary+=("$t: ${seconds}s, ${runs:-?} runs, corpus $(find "$corpus" -type f | wc -l) inputs, exit $status, crash files $crashes")
done
printf '%s\n' "${summary[@]}"
