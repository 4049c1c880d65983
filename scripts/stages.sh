# Stages for scripts/test, sourced by it (bash): `stage NAME COMMAND...` runs a command and
# records whether it passed, and how long it took, whatever came before; `summary` prints one
# line per stage and exits 1 if any failed, 0 otherwise.

STAGES=()
FAILED=0

stage() {
  local name="$1"
  shift
  echo "== $name"
  local started=$SECONDS status=0
  "$@" || status=$?
  local took=$((SECONDS - started))
  if [ "$status" -eq 0 ]; then
    STAGES+=("ok      ${took}s  $name")
  else
    STAGES+=("FAILED  ${took}s  $name (exit $status)")
    FAILED=1
  fi
}

summary() {
  echo "== summary"
  printf '%s\n' "${STAGES[@]}"
  exit "$FAILED"
}
