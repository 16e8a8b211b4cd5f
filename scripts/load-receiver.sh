#!/usr/bin/env bash
# Load run for the receiver layer (BENCHMARKS.md, "Receiver layer").
#
# Runs the axum example (release build) on 127.0.0.1 bare (no layer), then
# with the layer on the memory store, on Redis and on Postgres, alternating
# the configurations for ROUNDS rounds, each run DURATION long with wrk.
# Every request is a distinct, validly signed 1 KiB Standard Webhooks event
# (pre-generated before each run; wrk's Lua cannot compute HMACs).
# Then `hookgate serve` on the memory store under the same load, for its peak
# RSS (/usr/bin/time -v).
#
# Store round trips per event are counted exactly: Redis runs use a private
# redis-server on a free loopback port (INFO commandstats), Postgres runs a
# private database `hookgate_load` on the local server (pg_stat_database
# xact_commit: every store call is one autocommit statement).
#
# Env: DURATION (5s) CONNECTIONS (64) THREADS (2) ROUNDS (2) EVENTS (600000)
#      HOOKGATE_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/test)
# Needs: wrk (Debian/Ubuntu: apt-get install wrk), python3, redis-server,
# redis-cli, psql.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
DURATION="${DURATION:-5s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-2}"
EVENTS="${EVENTS:-600000}"
PG_URL="${HOOKGATE_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
PG_BASE="${PG_URL%/*}"
LOAD_DB=hookgate_load
SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
work="$(mktemp -d /tmp/hookgate-load.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$PG_BASE/postgres" -qtAc "DROP DATABASE IF EXISTS $LOAD_DB" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if ! command -v wrk >/dev/null; then
  echo "load-receiver: wrk not found; install it (Debian/Ubuntu: apt-get install wrk) or build it" \
    "from https://github.com/wg/wrk (make, then put ./wrk on PATH)" >&2
  exit 3
fi
for tool in python3 redis-server redis-cli psql; do
  command -v "$tool" >/dev/null || { echo "load-receiver: $tool not found" >&2; exit 3; }
done

echo "building (release)..." >&2
cargo build --release -q --example axum_receiver -p hookgate
cargo build --release -q -p hookgate-cli
example="$root/target/release/examples/axum_receiver"
hookgate="$root/target/release/hookgate"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# 1 KiB JSON body.
python3 - "$work/body.json" <<'PY'
import sys
prefix, suffix = '{"type":"invoice.paid","data":{"note":"', '"}}'
body = prefix + "x" * (1024 - len(prefix) - len(suffix)) + suffix
open(sys.argv[1], "w").write(body)
PY

# Fresh signed events, timestamped now (valid for the 5 minute tolerance).
gen_events() {
  python3 - "$SECRET" "$work/body.json" "$work/events.txt" "$EVENTS" "$1" <<'PY'
import base64, hashlib, hmac, sys, time
secret, body_file, out, n, tag = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
key = base64.b64decode(secret.split("_", 1)[1])
body = open(body_file, "rb").read()
ts = str(int(time.time()))
with open(out, "w") as f:
    f.write(ts + "\n")
    for i in range(n):
        msg_id = f"msg_{tag}_{i}"
        mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
        f.write(f"{msg_id} v1,{base64.b64encode(mac).decode()}\n")
PY
}

wait_listening() { # port
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2; return 1
}

run_wrk() { # port tag -> prints "req_per_s requests non2xx"
  gen_events "$2"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$root/scripts/load-receiver.lua" \
    "http://127.0.0.1:$1/webhooks" -- "$work/events.txt" "$work/body.json" "$THREADS" > "$work/wrk.txt"
  local rps reqs non2xx
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.txt")
  reqs=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$work/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/wrk.txt")
  echo "$rps ${reqs:-0} ${non2xx:-0} ${p99:-?}"
}

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
wait_listening "$redis_port"
psql "$PG_BASE/postgres" -qtAc "DROP DATABASE IF EXISTS $LOAD_DB" >/dev/null
psql "$PG_BASE/postgres" -qtAc "CREATE DATABASE $LOAD_DB" >/dev/null
pg_commits() { psql "$PG_BASE/postgres" -qtAc "SELECT xact_commit FROM pg_stat_database WHERE datname = '$LOAD_DB'"; }
# Round trips = top-level commands. Every store call is one EVALSHA (or
# EVAL/SCRIPT); INFO commandstats also counts the commands a script runs
# inside Redis (SET, GET, PTTL, DEL), which are not round trips: they are
# reported separately.
redis_calls() { # top|inner
  redis-cli -p "$redis_port" INFO commandstats | awk -F'[=,:]' -v want="$1" '
    /^cmdstat_/ && $1 != "cmdstat_info" && $1 != "cmdstat_config" {
      top = ($1 == "cmdstat_evalsha" || $1 == "cmdstat_eval" || $1 ~ /^cmdstat_script/)
      if ((want == "top") == top) s += $3
    }
    END {print s+0}'
}

# server_us_per_req: the receiver process's own CPU time (user+system, from
# /proc) per request -- far less sensitive to other load on the machine than
# req/s, since wrk and the server share the same cores.
clk_tck="$(getconf CLK_TCK)"
cpu_us_per_req() { # pid requests
  awk -v t="$clk_tck" -v n="$2" '{printf "%.1f", ($14 + $15) * 1e6 / t / (n > 0 ? n : 1)}' "/proc/$1/stat"
}
printf "%-9s %-6s %12s %10s %8s %8s %18s %s\n" config round req_per_s requests non2xx p99 server_us_per_req store_round_trips_per_event
for round in $(seq 1 "$ROUNDS"); do
  for config in bare memory redis postgres; do
    port="$(free_port)"
    env=(HOOKGATE_LISTEN="127.0.0.1:$port" HOOKGATE_SECRET="$SECRET" HOOKGATE_QUIET=1 RUST_LOG=warn)
    case "$config" in
      bare) env+=(HOOKGATE_BARE=1) ;;
      memory) env+=(HOOKGATE_STORE=memory) ;;
      redis) env+=(HOOKGATE_STORE="redis://127.0.0.1:$redis_port") ;;
      postgres) env+=(HOOKGATE_STORE="$PG_BASE/$LOAD_DB") ;;
    esac
    env "${env[@]}" "$example" 2>"$work/server.log" &
    server=$!
    pids+=("$server")
    wait_listening "$port"
    before=0
    [[ $config == redis ]] && { redis-cli -p "$redis_port" CONFIG RESETSTAT >/dev/null; before=0; }
    [[ $config == postgres ]] && before="$(pg_commits)"
    read -r rps reqs non2xx p99 < <(run_wrk "$port" "$config$round")
    cpu="$(cpu_us_per_req "$server" "$reqs")"
    kill "$server"; wait "$server" 2>/dev/null || true
    ops="-"
    accepted=$((reqs - non2xx))
    if [[ $config == redis ]]; then
      ops=$(python3 -c "print(f'{$(redis_calls top)/max($accepted,1):.3f} (+{$(redis_calls inner)/max($accepted,1):.3f} commands inside the scripts)')")
    elif [[ $config == postgres ]]; then
      # Backends flush their statistics when they exit (the server is gone).
      sleep 2
      ops=$(python3 -c "print(f'{($(pg_commits)-$before)/max($accepted,1):.3f} (commits)')")
    fi
    printf "%-9s %-6s %12s %10s %8s %8s %18s %s\n" "$config" "$round" "$rps" "$reqs" "$non2xx" "$p99" "$cpu" "$ops"
  done
done

# Duplicates: 1000 events, then the same 1000 again -> round trips per duplicate.
send_events() { # port first|again
  python3 - "$work/events.txt" "$work/body.json" "$1" "$2" <<'PY'
import http.client, sys
events, body, port, phase = sys.argv[1], open(sys.argv[2], "rb").read(), int(sys.argv[3]), sys.argv[4]
lines = open(events).read().split("\n")
ts, rows = lines[0], [l.split(" ") for l in lines[1:1001] if l]
conn = http.client.HTTPConnection("127.0.0.1", port)
for i, s in rows:
    conn.request("POST", "/webhooks", body, {"webhook-id": i, "webhook-timestamp": ts, "webhook-signature": s})
    r = conn.getresponse(); r.read()
    assert r.status == 200, r.status
    assert (r.getheader("idempotent-replayed") == "true") == (phase == "again"), phase
PY
}
for config in redis postgres; do
  port="$(free_port)"
  if [[ $config == redis ]]; then url="redis://127.0.0.1:$redis_port"; else url="$PG_BASE/$LOAD_DB"; fi
  HOOKGATE_LISTEN="127.0.0.1:$port" HOOKGATE_SECRET="$SECRET" HOOKGATE_QUIET=1 RUST_LOG=warn \
    HOOKGATE_STORE="$url" "$example" 2>"$work/server.log" &
  server=$!; pids+=("$server"); wait_listening "$port"
  gen_events "dup$config"
  send_events "$port" first
  if [[ $config == redis ]]; then redis-cli -p "$redis_port" CONFIG RESETSTAT >/dev/null; else sleep 11; before="$(pg_commits)"; fi
  send_events "$port" again
  kill "$server"; wait "$server" 2>/dev/null || true
  if [[ $config == redis ]]; then n="$(redis_calls top)"; else sleep 11; n=$(( $(pg_commits) - before )); fi
  echo "duplicates on $config: 1000 replayed, $(python3 -c "print($n/1000)") store round trips per duplicate"
done

# Peak RSS of `hookgate serve` (memory store) under the same load.
port="$(free_port)"
/usr/bin/time -v -o "$work/time.txt" "$hookgate" serve --listen "127.0.0.1:$port" --secret "$SECRET" \
  >/dev/null 2>"$work/serve.log" &
serve_pid=$!; pids+=("$serve_pid")
wait_listening "$port"
# /usr/bin/time's child is hookgate; signal it, not time.
child="$(pgrep -P "$serve_pid" || true)"
read -r rps reqs non2xx p99 < <(run_wrk "$port" serve)
kill -TERM "${child:-$serve_pid}"; wait "$serve_pid" 2>/dev/null || true
rss_kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
echo "hookgate serve (memory store): $rps req/s, $reqs requests, $non2xx non-2xx, peak RSS $((rss_kib / 1024)) MiB"
