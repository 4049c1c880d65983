# Sourced by scripts/test, scripts/test-packaging and scripts/build-wheel, from the checkout's
# root: where cargo's builds are kept between runs on this machine, so that a new clone at the
# same place (as CI makes) compiles only the project's own crates, and scripts/build-wheel's
# native wheel reuses the extension scripts/test built.
#
# kept_build_dir NAME prints ~/.cache/toolgate/NAME/<checkout> (made; all of NAME emptied past
# 16 GiB: one checkout's release, test and wheel-check builds hold about 7, and each run adds
# its own crates' artifacts). Kept per checkout: cargo tells that a crate's sources changed by
# their times, so a build kept from another checkout whose files are newer would pass for
# current in this one.
kept_build_dir() {
  local top="${XDG_CACHE_HOME:-$HOME/.cache}/toolgate/$1"
  mkdir -p "$top"
  if [ "$(du -sk "$top" | cut -f1)" -gt $((16 * 1024 * 1024)) ]; then
    rm -rf "${top:?}"/*
  fi
  local dir
  dir="$top/$(pwd -P | sha256sum | cut -c1-16)"
  mkdir -p "$dir"
  printf '%s\n' "$dir"
}
