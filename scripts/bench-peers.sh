#!/usr/bin/env bash
# Verify the same Standard Webhooks message with hookgate-core, the `svix` crate
# and the `standardwebhooks` crate, interleaved, at 1 KiB, 64 KiB and 1 MiB; print
# a Markdown table (ns per verification, ratios, share of raw SHA-256 speed).
# Usage: scripts/bench-peers.sh [--rounds N] [--budget-ms MS]
# The bench crate (benches/peers) is outside the workspace, so CI never builds it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../benches/peers"
cargo run --release --quiet -- "$@"
