#!/usr/bin/env bash
# Install the providers' own webhook libraries for the interop tests, quietly
# and idempotently:
#   target/interop/venv   python3 venv: standardwebhooks, stripe, slack_sdk, pynacl (ed25519)
#   target/interop/node   npm prefix:   @octokit/webhooks-methods, @shopify/shopify-api
# Usage: tests/interop/setup.sh [TARGET_DIR]   (default: <workspace>/target)
# Exits 0 when everything is installed, 3 when python3 or node/npm is missing,
# another non-zero code when an install failed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${1:-${CARGO_TARGET_DIR:-$root/target}}"
dir="$target/interop"
mkdir -p "$dir"

PY_PINS=(standardwebhooks==1.1.0 stripe==16.1.0 slack-sdk==3.47.0 pynacl==1.5.0)
NPM_PINS=(@octokit/webhooks-methods@6.0.0 @shopify/shopify-api@15.0.0)

command -v python3 >/dev/null 2>&1 || { echo "interop setup: python3 not found" >&2; exit 3; }
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
  || { echo "interop setup: node/npm not found" >&2; exit 3; }

# One installer at a time (several test binaries may call this at once).
exec 9>"$dir/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

py_stamp="$dir/venv/.hookgate-pins"
if [[ ! -f "$py_stamp" || "$(cat "$py_stamp")" != "${PY_PINS[*]}" ]]; then
  rm -rf "$dir/venv"
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input "${PY_PINS[@]}" >"$dir/pip.log" 2>&1 \
    || { echo "interop setup: pip install failed, see $dir/pip.log" >&2; exit 4; }
  printf '%s' "${PY_PINS[*]}" >"$py_stamp"
fi

node_stamp="$dir/node/.hookgate-pins"
if [[ ! -f "$node_stamp" || "$(cat "$node_stamp")" != "${NPM_PINS[*]}" ]]; then
  rm -rf "$dir/node"
  mkdir -p "$dir/node"
  echo '{"name":"hookgate-interop","private":true}' >"$dir/node/package.json"
  npm install --prefix "$dir/node" --silent --no-audit --no-fund --save-exact \
    "${NPM_PINS[@]}" >"$dir/npm.log" 2>&1 \
    || { echo "interop setup: npm install failed, see $dir/npm.log" >&2; exit 4; }
  printf '%s' "${NPM_PINS[*]}" >"$node_stamp"
fi

echo "$dir"
