#!/usr/bin/env bash
# The Postgres queue's lease plan at scale (issue 14): fills a fresh schema with
# ROWS deliveries (default 1,000,000), analyzes it and prints the lease
# statement's EXPLAIN (ANALYZE, BUFFERS), rolled back. The schema is dropped.
#   scripts/explain-queue.sh [ROWS]
# HOOKGATE_POSTGRES_URL picks the server (default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo run -q -p hookgate-sender --features postgres --example explain_lease -- "${1:-1000000}"
