#!/usr/bin/env bash
# Soak benchmark for the receiver layer on each dedup store (issue 15;
# BENCHMARKS.md, "Soak").
#
# For each store it runs the axum example (release) with the layer on
# 127.0.0.1 and drives it with `soak_load` (crates/hookgate-tower/examples):
#   1. at peak (as fast as 64 connections get answers) for DURATION,
#   2. at a fixed rate, FRACTION (0.8) of phase 1's median rate, for DURATION
#      (open loop: latencies count from each request's due time).
# Every request is a distinct, freshly signed 1 KiB Standard Webhooks event.
# Per 10-s window it records req/s, p50/p99/p99.9/max latency, the server's
# RSS, the store size (Postgres: rows, dead tuples, table + index KiB; Redis:
# keys; memory: not visible from outside, bounded by its capacity of 100,000
# keys) and writes:
#   OUT/<store>-<phase>.tsv   the windows
#   OUT/summary.md            a Markdown table of every window + one line per run
#   OUT/soak.png              req/s and p99 per window (gnuplot, if installed)
# Bounded and loopback only: servers are private (a redis-server on a free
# port, a Postgres database of its own that is dropped at the end) and
# everything stops by itself after 2 x DURATION per store.
#
# Done events are kept RETENTION_SECS (60) and the Postgres sweep runs every
# SWEEP_SECS (10), so even a short run shows whether the store stays bounded.
#
# Usage:  scripts/soak.sh                 # 10 minutes per phase and store (~1 h)
#         QUICK=1 scripts/soak.sh         # 60 s per phase and store (~7 min)
# Env:    DURATION (10m; 60s with QUICK=1)  STORES ("memory redis postgres")
#         FRACTION (0.8)  CONNECTIONS (64)  WINDOW (10s)  RETENTION_SECS (60)
#         SWEEP_SECS (10)  OUT (target/soak/<UTC time>)  NO_BUILD=1
#         HOOKGATE_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/test)
# Needs:  cargo, python3, redis-server, redis-cli, psql; gnuplot for the plot.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ "${QUICK:-0}" == 1 ]]; then DURATION="${DURATION:-60s}"; else DURATION="${DURATION:-10m}"; fi
STORES="${STORES:-memory redis postgres}"
FRACTION="${FRACTION:-0.8}"
CONNECTIONS="${CONNECTIONS:-64}"
WINDOW="${WINDOW:-10s}"
RETENTION_SECS="${RETENTION_SECS:-60}"
SWEEP_SECS="${SWEEP_SECS:-10}"
OUT="${OUT:-$root/target/soak/$(date -u +%Y%m%dT%H%M%SZ)}"
PG_URL="${HOOKGATE_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
PG_BASE="${PG_URL%/*}"
SOAK_DB="hookgate_soak_$$"
SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

for tool in cargo python3 redis-server redis-cli psql; do
  command -v "$tool" >/dev/null || { echo "soak: $tool not found" >&2; exit 3; }
done
mkdir -p "$OUT"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$PG_BASE/postgres" -qtAc "DROP DATABASE IF EXISTS $SOAK_DB" >/dev/null 2>&1 || true
}
trap cleanup EXIT

if [[ "${NO_BUILD:-0}" != 1 ]]; then
  echo "soak: building (release)..." >&2
  cargo build --release -q --example axum_receiver -p hookgate
  cargo build --release -q --example soak_load -p hookgate-tower
fi
server_bin="$root/target/release/examples/axum_receiver"
load_bin="$root/target/release/examples/soak_load"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_listening() { # port
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "soak: server on port $1 did not start" >&2; return 1
}
median_rate() { # tsv -> median req/s of its windows
  python3 - "$1" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l[0].isdigit()]
print(int(statistics.median(float(r[3]) for r in rows)) if rows else 0)
PY
}

{
  echo "# soak $(date -u +%FT%TZ): DURATION=$DURATION FRACTION=$FRACTION CONNECTIONS=$CONNECTIONS"
  echo "# RETENTION_SECS=$RETENTION_SECS SWEEP_SECS=$SWEEP_SECS, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# postgres: $(psql "$PG_BASE/postgres" -qtAc "select string_agg(name || '=' || setting, ' ' order by name) from pg_settings where name in ('autovacuum','fsync','synchronous_commit','shared_buffers','max_wal_size')" 2>/dev/null || echo '?')"
} > "$OUT/conditions.txt"
cat "$OUT/conditions.txt" >&2

for store in $STORES; do
  port="$(free_port)"
  env=(HOOKGATE_LISTEN="127.0.0.1:$port" HOOKGATE_SECRET="$SECRET" HOOKGATE_QUIET=1 RUST_LOG=warn
       HOOKGATE_RETENTION_SECS="$RETENTION_SECS" HOOKGATE_SWEEP_SECS="$SWEEP_SECS")
  probe=""
  case "$store" in
    memory) env+=(HOOKGATE_STORE=memory) ;;
    redis)
      redis_port="$(free_port)"
      redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no >"$OUT/redis.log" 2>&1 &
      pids+=($!)
      wait_listening "$redis_port"
      env+=(HOOKGATE_STORE="redis://127.0.0.1:$redis_port")
      probe="redis-cli -p $redis_port DBSIZE"
      ;;
    postgres)
      psql "$PG_BASE/postgres" -qtAc "DROP DATABASE IF EXISTS $SOAK_DB" >/dev/null
      psql "$PG_BASE/postgres" -qtAc "CREATE DATABASE $SOAK_DB" >/dev/null
      env+=(HOOKGATE_STORE="$PG_BASE/$SOAK_DB")
      # rows (exact), dead tuples (statistics), table and index size in KiB
      probe="psql '$PG_BASE/$SOAK_DB' -qtAc \"select (select count(*) from hookgate_dedup), n_dead_tup, pg_table_size(relid)/1024, pg_indexes_size(relid)/1024 from pg_stat_user_tables where relname = 'hookgate_dedup'\""
      ;;
    *) echo "soak: unknown store $store" >&2; exit 2 ;;
  esac
  env "${env[@]}" "$server_bin" 2>"$OUT/server-$store.log" &
  server=$!
  pids+=("$server")
  wait_listening "$port"
  for phase in peak rate; do
    rate=0
    if [[ $phase == rate ]]; then
      rate="$(python3 -c "print(int($(median_rate "$OUT/$store-peak.tsv") * $FRACTION))")"
    fi
    echo "soak: $store, $phase (rate $rate/s, 0 = peak) for $DURATION, load average $(cut -d' ' -f1 /proc/loadavg)" >&2
    "$load_bin" --url "http://127.0.0.1:$port/webhooks" --secret "$SECRET" --rate "$rate" \
      --connections "$CONNECTIONS" --duration "$DURATION" --window "$WINDOW" \
      --tag "$store$phase$$" --pid "$server" ${probe:+--probe "$probe"} | tee "$OUT/$store-$phase.tsv" >&2
    echo "# rate=$rate loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/$store-$phase.tsv"
  done
  kill "$server"; wait "$server" 2>/dev/null || true
done

python3 - "$OUT" "$STORES" <<'PY' > "$OUT/summary.md"
import statistics, sys, os
out, stores = sys.argv[1], sys.argv[2].split()
print("| store | phase | target req/s | windows | median req/s | lowest window / median | p99 median / worst window | p99.9 worst | RSS first → last (max) MiB | store size at end | load avg | I/O full % (median / max) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
detail = []
for store in stores:
    for phase in ("peak", "rate"):
        path = os.path.join(out, f"{store}-{phase}.tsv")
        if not os.path.exists(path):
            continue
        lines = open(path).read().splitlines()
        rows = [l.split("\t") for l in lines if l[:1].isdigit()]
        target = next((l.split("rate=")[1].split()[0] for l in lines if l.startswith("# rate=")), "?")
        if not rows:
            continue
        rates = [float(r[3]) for r in rows]
        p99 = [float(r[8]) for r in rows]
        p999 = [float(r[9]) for r in rows]
        rss = [int(r[11]) / 1024 for r in rows if r[11].isdigit()]
        med = statistics.median(rates)
        size = " / ".join(rows[-1][14:]) if len(rows[-1]) > 14 and rows[-1][14] else "-"
        loads = [float(r[12]) for r in rows if r[12] != "-"]
        io = [float(r[13]) for r in rows if r[13] != "-"]
        load_s = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
        io_s = f"{statistics.median(io):.0f} / {max(io):.0f}" if io else "-"
        rss_s = f"{rss[0]:.0f} → {rss[-1]:.0f} ({max(rss):.0f})" if rss else "-"
        print(f"| {store} | {phase} | {target} | {len(rows)} | {med:,.0f} | {min(rates) / med:.0%} | {statistics.median(p99):.1f} / {max(p99):.1f} ms | {max(p999):.1f} ms | {rss_s} | {size} | {load_s} | {io_s} |")
        detail.append((store, phase, rows))
print()
print("Windows (10 s each): req/s, p50 / p99 / p99.9 / max in ms, RSS MiB, machine load average and I/O pressure (`full avg10`, %), store size (Postgres: rows, dead tuples, table KiB, index KiB; Redis: keys).")
print()
print("| store | phase | end s | req/s | non-2xx | errors | p50 | p99 | p99.9 | max | RSS | load | I/O full | store |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for store, phase, rows in detail:
    for r in rows:
        rss = f"{int(r[11]) / 1024:.0f}" if r[11].isdigit() else "-"
        size = " / ".join(r[14:]) if len(r) > 14 and r[14] else "-"
        print(f"| {store} | {phase} | {float(r[1]):.0f} | {float(r[3]):,.0f} | {r[5]} | {r[6]} | {r[7]} | {r[8]} | {r[9]} | {r[10]} | {rss} | {r[12]} | {r[13]} | {size} |")
PY
cat "$OUT/summary.md"

if command -v gnuplot >/dev/null; then
  plot=""
  for store in $STORES; do
    for phase in peak rate; do
      [[ -f "$OUT/$store-$phase.tsv" ]] && plot+="'$OUT/$store-$phase.tsv' using 2:COL with linespoints title '$store $phase', "
    done
  done
  gnuplot <<GP
set terminal pngcairo size 900,600 font ",9" noenhanced
set output "$OUT/soak.png"
set datafile separator "\t"
set datafile commentschars "#wt"
set multiplot layout 2,1 title "hookgate soak: layer + store, $CONNECTIONS connections, 1 KiB events ($DURATION per phase)"
set key outside right
set grid
set ylabel "req/s"
set yrange [0:*]
plot ${plot//COL/4}
set ylabel "p99 latency (ms)"
set logscale y
set yrange [*:*]
set xlabel "seconds into the phase"
plot ${plot//COL/9}
unset multiplot
GP
  echo "soak: plot in $OUT/soak.png" >&2
fi
echo "soak: results in $OUT" >&2
