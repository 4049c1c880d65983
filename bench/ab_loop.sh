#!/usr/bin/env bash
# Time the allowed decision (one limit + one regex) of two commits' cores taking turns, with
# the `decide_loop` example: N decisions in a plain loop, timed inside the process, so start-
# up and the clock's warm-up are not counted. Lighter than criterion (no analysis between
# runs), so many short rounds fit in a minute; with this machine's drift, many rounds is what
# resolves a change of a few percent. Prints each side's median and fastest run and the
# median of the per-round ratios (head over base).
#
#   bench/ab_loop.sh BASE [HEAD] [ROUNDS] [N]
#   bench/ab_loop.sh b6d7c50 HEAD 40 1500000     # ~1 min after the builds
set -euo pipefail
cd "$(dirname "$0")/.."

base=$(bench/build_decide_loop.sh "${1:?usage: bench/ab_loop.sh BASE [HEAD] [ROUNDS] [N]}")
head=$(bench/build_decide_loop.sh "${2:-HEAD}")
rounds=${3:-30}
n=${4:-1500000}

time_one() { "$1" "$n" | awk '/ns per decision/ { print $1 }'; }

results=()
for ((i = 0; i < rounds; i++)); do
    # Alternate which side goes first, so neither always follows the other.
    if ((i % 2)); then b=$(time_one "$base"); h=$(time_one "$head")
    else h=$(time_one "$head"); b=$(time_one "$base"); fi
    echo "round $((i + 1)): base $b ns, head $h ns"
    results+=("$b $h")
done
printf '%s\n' "${results[@]}" | awk -v base="$1" -v head="${2:-HEAD}" '
    function median(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { b[NR] = $1; h[NR] = $2; r[NR] = $2 / $1; bb[NR] = $1; hh[NR] = $2 }
    END {
        n = NR; mb = median(bb, n); mh = median(hh, n); mr = median(r, n)
        minb = b[1]; minh = h[1]
        for (i = 2; i <= n; i++) { if (b[i] < minb) minb = b[i]; if (h[i] < minh) minh = h[i] }
        printf "%d rounds: base %s median %.1f ns (fastest %.1f), head %s median %.1f ns (fastest %.1f); head/base median ratio %.3f\n", n, base, mb, minb, head, mh, minh, mr
    }'
