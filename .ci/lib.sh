# Shell functions shared by .ci/run and the scripts it calls (sourced, not run).

# expect_failure WHAT PATTERN... -- CMD...: CMD must exit non-zero and print every PATTERN (an
# extended regular expression), so that a build error does not pass for the failure we want.
expect_failure() {
  local what=$1 out pattern patterns=()
  shift
  while [ "$1" != "--" ]; do
    patterns+=("$1")
    shift
  done
  shift
  if out=$("$@" 2>&1); then
    echo "$out" >&2
    echo "error: $what passed but must fail" >&2
    exit 1
  fi
  for pattern in "${patterns[@]}"; do
    if ! grep -qE "$pattern" <<<"$out"; then
      echo "$out" >&2
      echo "error: $what failed, but without printing /$pattern/" >&2
      exit 1
    fi
    echo "fails as it must: $what: $(grep -m1 -E "$pattern" <<<"$out")"
  done
}
