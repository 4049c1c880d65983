#!/usr/bin/env bash
# Install the peers that bench/peers_bench.py measures toolgate against, into target/peers/
# (never needed by the tests). Idempotent: a peer already built at the pinned version is kept.
#
#   bench/peers/install.sh                      # both
#   bench/peers/install.sh limitador            # or one: limitador | opa
#   LIMITADOR_SRC=DIR bench/peers/install.sh    # where Limitador's source is (see below)
#   AGENTGATEWAY_SRC=DIR bench/peers/install.sh agentgateway   # not part of "all" (see below)
#
# - Limitador (Kuadrant/limitador, Envoy's rate limit service), built from source: it is not
#   on crates.io. LIMITADOR_SRC is a git clone of github.com/Kuadrant/limitador (a bare
#   repository or a work tree), from which the pinned commit is exported; default:
#   target/peers/src/limitador-git. Its build needs protoc (tonic-prost-build), libclang
#   (rocksdb's bindings) and perl/make (vendored OpenSSL): installed with apt-get if missing.
# - OPA with its Envoy plugin (open-policy-agent/opa-envoy-plugin), `go install` from the Go
#   module proxy at the pinned tag.
# - agentgateway (agentgateway/agentgateway), the gateway whose mcpGuardrails call toolgate's
#   ExtMcp service: for end-to-end checks behind it, not a bench peer, so only on request.
#   Built from source like Limitador: AGENTGATEWAY_SRC is a git clone of
#   github.com/agentgateway/agentgateway (bare or a work tree); default
#   target/peers/src/agentgateway-git. The tag's [patch.crates-io] points at git forks that cannot
#   be fetched, so bench/peers/agentgateway-v1.4.1.patch moves it to crates.io releases (it says
#   what and why), lockfile included, and the build is --locked. Profile quick-release (the
#   release profile's LTO and single codegen unit take ~40 min on 2 cores); about 25 min from
#   nothing on 2 cores. To share the machine: CARGO_BUILD_JOBS=2 nice -n 10 bench/peers/install.sh ...
#
# Binaries: target/peers/bin/limitador-server, target/peers/bin/opa-envoy-plugin,
# target/peers/bin/agentgateway.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PEERS=$ROOT/target/peers
BIN=$PEERS/bin
LIMITADOR_COMMIT=4d119ffab9c18bb63559b125174c9562dddcb801 # tag server-v2.4.0, the latest release
OPA_ENVOY_VERSION=v1.15.2-envoy
AGENTGATEWAY_COMMIT=163ea2146acb7b82082acea30ed691b29079095f # tag v1.4.1, the latest release
AGENTGATEWAY_PATCH=$ROOT/bench/peers/agentgateway-v1.4.1.patch
mkdir -p "$BIN"

apt_need() { # install the Debian packages that are missing
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if ((${#missing[@]})); then
        echo "apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

install_limitador() {
    local stamp=$PEERS/limitador.version
    if [[ -x $BIN/limitador-server && $(cat "$stamp" 2>/dev/null) == "$LIMITADOR_COMMIT" ]]; then
        echo "limitador-server: already built at ${LIMITADOR_COMMIT:0:10}"
        return
    fi
    local src=${LIMITADOR_SRC:-$PEERS/src/limitador-git}
    if ! git --git-dir="$src" rev-parse -q --verify "$LIMITADOR_COMMIT^{commit}" >/dev/null 2>&1 &&
        ! git -C "$src" rev-parse -q --verify "$LIMITADOR_COMMIT^{commit}" >/dev/null 2>&1; then
        echo "no Limitador source with commit $LIMITADOR_COMMIT at $src:" >&2
        echo "  clone github.com/Kuadrant/limitador there, or set LIMITADOR_SRC" >&2
        exit 1
    fi
    apt_need protobuf-compiler libclang-dev clang perl make pkg-config
    local tree=$PEERS/src/limitador
    rm -rf "$tree" && mkdir -p "$tree"
    # Only what the build reads (a snapshot may lack large unrelated files, e.g. a profile).
    local paths=(Cargo.toml Cargo.lock limitador limitador-server)
    { git --git-dir="$src" archive "$LIMITADOR_COMMIT" "${paths[@]}" 2>/dev/null ||
        git -C "$src" archive "$LIMITADOR_COMMIT" "${paths[@]}"; } | tar -x -C "$tree"
    # The tag's Cargo.lock lags its manifests by the release's own version bump: the build
    # adjusts that entry and keeps every other locked version (so no --locked).
    # GIT_CEILING_DIRECTORIES: its build script asks git for a hash; not this repository's.
    (cd "$tree" && GIT_CEILING_DIRECTORIES=$PEERS/src CARGO_TARGET_DIR=$PEERS/limitador-target \
        cargo build --release -p limitador-server)
    cp "$PEERS/limitador-target/release/limitador-server" "$BIN/"
    echo "$LIMITADOR_COMMIT" >"$stamp"
    "$BIN/limitador-server" --version
}

install_opa() {
    local stamp=$PEERS/opa-envoy-plugin.version
    if [[ -x $BIN/opa-envoy-plugin && $(cat "$stamp" 2>/dev/null) == "$OPA_ENVOY_VERSION" ]]; then
        echo "opa-envoy-plugin: already built at $OPA_ENVOY_VERSION"
        return
    fi
    command -v go >/dev/null || apt_need golang-go
    # A module of our own that requires the plugin, rather than `go install pkg@version`:
    # that also asks the proxy for the module's version list, which the proxy here refuses.
    local mod=$PEERS/src/opa-envoy-build
    rm -rf "$mod" && mkdir -p "$mod"
    cat >"$mod/go.mod" <<GOMOD
module toolgate.bench/opa-envoy-build

go 1.25.0

require github.com/open-policy-agent/opa-envoy-plugin $OPA_ENVOY_VERSION
GOMOD
    (cd "$mod" && GOFLAGS=-mod=mod CGO_ENABLED=0 \
        go build -o "$BIN/opa-envoy-plugin" github.com/open-policy-agent/opa-envoy-plugin/cmd/opa-envoy-plugin)
    echo "$OPA_ENVOY_VERSION" >"$stamp"
    "$BIN/opa-envoy-plugin" version | head -3
}

install_agentgateway() {
    local stamp=$PEERS/agentgateway.version
    # The stamp names the patch too: editing it rebuilds.
    local want="$AGENTGATEWAY_COMMIT patch:$(sha256sum "$AGENTGATEWAY_PATCH" | cut -c1-16) loopback"
    if [[ -x $BIN/agentgateway && $(cat "$stamp" 2>/dev/null) == "$want" ]]; then
        echo "agentgateway: already built at ${AGENTGATEWAY_COMMIT:0:10}"
        return
    fi
    local src=${AGENTGATEWAY_SRC:-$PEERS/src/agentgateway-git}
    if ! git --git-dir="$src" rev-parse -q --verify "$AGENTGATEWAY_COMMIT^{commit}" >/dev/null 2>&1 &&
        ! git -C "$src" rev-parse -q --verify "$AGENTGATEWAY_COMMIT^{commit}" >/dev/null 2>&1; then
        echo "no agentgateway source with commit $AGENTGATEWAY_COMMIT at $src:" >&2
        echo "  clone github.com/agentgateway/agentgateway there, or set AGENTGATEWAY_SRC" >&2
        exit 1
    fi
    # protos are compiled in-process (protox): no protoc. C for jemalloc, mimalloc, aws-lc.
    apt_need patch make gcc g++ perl
    local tree=$PEERS/src/agentgateway
    rm -rf "$tree" && mkdir -p "$tree"
    # Only what the build reads (a snapshot may lack large unrelated files, e.g. under schema/).
    # Not rust-toolchain.toml: it names a toolchain rustup would download; the current stable
    # builds it (workspace rust-version 1.90).
    local paths=(Cargo.toml Cargo.lock crates tools .cargo)
    { git --git-dir="$src" archive "$AGENTGATEWAY_COMMIT" "${paths[@]}" 2>/dev/null ||
        git -C "$src" archive "$AGENTGATEWAY_COMMIT" "${paths[@]}"; } | tar -x -C "$tree"
    patch -d "$tree" -p1 -s <"$AGENTGATEWAY_PATCH"
    # This build serves tests and benchmarks on one machine: its binds listen on 127.0.0.1,
    # not on every address (the tag has no setting for a bind's address).
    sed -i 's/IpAddr::V6(Ipv6Addr::UNSPECIFIED), bind_port/IpAddr::V6(Ipv6Addr::LOCALHOST), bind_port/;
            s/IpAddr::V4(Ipv4Addr::UNSPECIFIED), bind_port/IpAddr::V4(Ipv4Addr::LOCALHOST), bind_port/' \
        "$tree/crates/agentgateway/src/types/local.rs"
    grep -q "UNSPECIFIED), bind_port" "$tree/crates/agentgateway/src/types/local.rs" &&
        { echo "agentgateway: a bind still listens on every address" >&2; exit 1; }
    # crates/core/build.rs runs tools/report_build_info.sh: VERSION and GIT_REVISION are what
    # `agentgateway --version` prints. GIT_CEILING_DIRECTORIES: its git is not this repository's.
    (cd "$tree" && VERSION=v1.4.1 GIT_REVISION=$AGENTGATEWAY_COMMIT GIT_CEILING_DIRECTORIES=$PEERS/src \
        CARGO_TARGET_DIR=$PEERS/agentgateway-target \
        cargo build --locked --profile quick-release -p agentgateway-app)
    cp "$PEERS/agentgateway-target/quick-release/agentgateway" "$BIN/"
    echo "$want" >"$stamp"
    "$BIN/agentgateway" --version
}

what=${1:-all}
case $what in
    all) install_opa; install_limitador ;;
    limitador) install_limitador ;;
    opa) install_opa ;;
    agentgateway) install_agentgateway ;;
    *) echo "usage: $0 [all|limitador|opa|agentgateway]" >&2; exit 2 ;;
esac
