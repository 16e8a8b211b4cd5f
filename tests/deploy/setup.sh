#!/usr/bin/env bash
# Make `promtool` available for the deploy/ tests: use the one on PATH, else
# install Debian's `prometheus` package (which ships promtool) when running as
# root with apt-get. Prints promtool's path; exits 3 when it cannot be had.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  lock=/tmp/hookgate-promtool-install.lock
  exec 9>"$lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if ! command -v promtool >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } \
      >/tmp/hookgate-promtool-install.log 2>&1 \
      || { echo "deploy setup: apt-get install prometheus failed, see /tmp/hookgate-promtool-install.log" >&2; exit 4; }
  fi
  command -v promtool && exit 0
fi
echo "deploy setup: promtool not found (install Debian's 'prometheus' package)" >&2
exit 3
