#!/usr/bin/env bash
# Build and run every fuzz target for a bounded time.
#   fuzz/run.sh [SECONDS_PER_TARGET]      (default 20; or env FUZZ_SECONDS)
# Installs cargo-fuzz (crates.io) if missing. Exits non-zero on any crash;
# crashing inputs are left in fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${1:-${FUZZ_SECONDS:-20}}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
  # cargo-fuzz needs nightly flags; stable accepts them under RUSTC_BOOTSTRAP
  # and ships the sanitizer runtimes, so a machine without nightly still fuzzes.
  echo "fuzz: no $toolchain toolchain; using stable with RUSTC_BOOTSTRAP=1" >&2
  toolchain=stable
  export RUSTC_BOOTSTRAP=1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi

targets=$(cargo "+$toolchain" fuzz list)
echo "fuzz: building all targets" >&2
cargo "+$toolchain" fuzz build

failed=()
for t in $targets; do
  echo "fuzz: $t for ${seconds}s" >&2
  mkdir -p "corpus/$t"
  # -rss_limit_mb / -max_len keep runs bounded on a shared 2-core machine.
  if ! cargo "+$toolchain" fuzz run "$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 >"corpus/$t.log" 2>&1; then
    echo "fuzz: $t FAILED, see fuzz/corpus/$t.log and fuzz/artifacts/$t/" >&2
    tail -n 40 "corpus/$t.log" >&2
    failed+=("$t")
  else
    grep -E '^stat::number_of_executed_units' "corpus/$t.log" | sed "s/^/fuzz: $t /" >&2 || true
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all $(wc -w <<<"$targets") targets ran ${seconds}s clean"
