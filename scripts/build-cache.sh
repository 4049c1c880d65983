# Sourced by scripts/test, scripts/test-packaging and scripts/build-wheel, from the checkout's
# root: where cargo's builds are kept between runs on this machine, so that a new clone at the
# same place (as CI makes) compiles only the project's own crates, and scripts/build-wheel's
# native wheel reuses the extension scripts/test built.
#
# kept_build_dir NAME prints ~/.cache/toolgate/NAME/<checkout> (made, and marked used). Past
# TOOLGATE_KEPT_BUILDS_KIB (16 GiB: one checkout's release, test and wheel-check builds hold
# about 7, and each run adds its own crates' artifacts), other checkouts' builds of NAME go,
# least recently used first; this checkout's never does, since a run of its own (pytest beside
# the packaging tests) may be loading what it built. Kept per checkout: cargo tells that a
# crate's sources changed by their times, so a build kept from another checkout whose files
# are newer would pass for current in this one.
kept_build_dir() {
  local top="${XDG_CACHE_HOME:-$HOME/.cache}/toolgate/$1"
  local dir
  dir="$top/$(pwd -P | sha256sum | cut -c1-16)"
  mkdir -p "$dir"
  touch "$dir"
  local budget="${TOOLGATE_KEPT_BUILDS_KIB:-$((16 * 1024 * 1024))}" oldest
  while [ "$(du -sk "$top" | cut -f1)" -gt "$budget" ]; do
    oldest="$(ls -1dtr "$top"/*/ | grep -vxF "$dir/" | head -n 1 || true)"
    [ -n "$oldest" ] || break
    rm -rf "${oldest:?}"
  done
  printf '%s\n' "$dir"
}
