#!/usr/bin/env bash
# Compare the Rust core's criterion benchmarks at two commits, taking turns, so both see the
# same moments of a machine whose speed drifts (a shared VM: single runs minutes apart differ
# by ±25%, while runs seconds apart agree far better). Prints every run and, per benchmark,
# the median of each side and of the per-round ratios.
#
#   bench/ab_micro.sh BASE [HEAD] [ROUNDS] [FILTER]
#   bench/ab_micro.sh dff3a0a HEAD 8 'one_limit_one_regex/allow$|no_limit/one_regex'
#
# HEAD defaults to HEAD, ROUNDS to 6, FILTER to the target case and its references; AB_BENCH
# names another of the core's benches (default decide; body: a request read and decided,
# `AB_BENCH=body bench/ab_micro.sh BASE HEAD 8 'session/'`). Each side
# is built from a clean export of its commit (uncommitted changes are not measured) under
# target/ab/<commit>; each run is criterion's median of AB_MEASURE_S (default 3) seconds of
# samples after AB_WARMUP_S (default 1) of warm-up. Many short rounds resolve small changes
# better than a few long ones: the machine's slow spells then hit both sides alike. Besides
# the medians, the fastest run of each side is printed: noise only ever adds time, so the
# minimum is the closest a run gets to what the code itself costs.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,16p' "$0"; exit 0; }

base=${1:?usage: bench/ab_micro.sh BASE [HEAD] [ROUNDS] [FILTER]}
head=${2:-HEAD}
rounds=${3:-6}
filter=${4:-'one_limit_one_regex/allow$|one_limit_one_regex/deny_condition|no_limit/one_regex|keys/1$'}
bench=${AB_BENCH:-decide}

build() { # build COMMIT: print the path of its bench binary
    local commit src target
    commit=$(git rev-parse --short "$1")
    src="target/ab/$commit/src"
    target="$PWD/target/ab/$commit/target"
    if [[ ! -d "$src" ]]; then
        mkdir -p "$src"
        git archive "$commit" | tar -x -C "$src"
    fi
    (cd "$src" && CARGO_TARGET_DIR="$target" cargo bench -q -p toolgate-core --bench "$bench" --no-run >&2)
    find "$target/release/deps" -maxdepth 1 -type f -name "$bench-*" ! -name '*.d' -printf '%T@ %p\n' |
        sort -n | tail -1 | cut -d' ' -f2
}

# Criterion writes its results under CRITERION_HOME (else ./target/criterion, which
# run_micro.sh reads): keep the A/B runs' apart.
export CRITERION_HOME="$PWD/target/ab/criterion"
base_bin=$(build "$base")
head_bin=$(build "$head")
out=$(mktemp)
for round in $(seq "$rounds"); do
    for side in base head; do
        bin=${side}_bin
        "${!bin}" --bench --warm-up-time "${AB_WARMUP_S:-1}" --measurement-time "${AB_MEASURE_S:-3}" "$filter" 2>/dev/null |
            awk -v side="$side" -v round="$round" '
                # "NAME  time: [low unit median unit high unit]", on one line or two.
                $1 ~ /^[a-z_]+\// { name = $1 }
                {
                    for (i = 1; i <= NF; i++) if ($i == "time:") {
                        v = $(i + 3); u = $(i + 4)
                        if (u == "µs") v *= 1000; else if (u == "ms") v *= 1e6
                        print round, side, name, v
                    }
                }' | tee -a "$out"
    done
done

echo
echo "medians over $rounds rounds, ns (base $(git rev-parse --short "$base"), head $(git rev-parse --short "$head")):"
python3 - "$out" <<'PY'
import statistics, sys
from collections import defaultdict
runs = defaultdict(dict)
for line in open(sys.argv[1]):
    rnd, side, name, ns = line.split()
    runs[name].setdefault(side, {})[rnd] = float(ns)
print(f"{'benchmark':50} {'base':>8} {'head':>8} {'head/base':>10} {'min base':>9} {'min head':>9}")
def cell(values, fmt):
    # A benchmark one side does not have (new, or removed) shows "-" there.
    return format(values, fmt) if values is not None else f"{'-':>{fmt.split('.')[0]}}"
for name, sides in runs.items():
    base, head = sides.get("base", {}), sides.get("head", {})
    ratios = [head[r] / base[r] for r in base if r in head]
    med = lambda v: statistics.median(v) if v else None
    low = lambda v: min(v) if v else None
    print(f"{name:50} {cell(med(base.values()), '8.0f')} {cell(med(head.values()), '8.0f')}"
          f" {cell(med(ratios), '10.2f')} {cell(low(base.values()), '9.0f')}"
          f" {cell(low(head.values()), '9.0f')}")
PY
rm -f "$out"
