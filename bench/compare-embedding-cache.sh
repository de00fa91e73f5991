#!/usr/bin/env bash
# The embedding service's cache tiers, measured in one run on this machine: latency of a
# 1-text /embed answered by L1, by L2 (a service with EMBEDDING_CACHE_SIZE=0) and by the model
# (a new text each time), and the throughput of traffic where 70% of texts were seen before
# (the seed's warm-up hit rate) with both caches vs the model alone (no L1, no L2).
#
#   bench/compare-embedding-cache.sh
#
# Starts a sutra-storage cache shard and three services on 127.0.0.1 (ports below) with
# temporary directories, runs `sutra-validate bench`, stops them by pid.
# Environment: SHARD_PORT (16452), PORT_CACHED (16888), PORT_L2 (16889), PORT_RAW (16890),
# REQUESTS (2000), CLIENTS (8).
set -euo pipefail
cd "$(dirname "$0")/.."

shard_port=${SHARD_PORT:-16452}
port_cached=${PORT_CACHED:-16888}
port_l2=${PORT_L2:-16889}
port_raw=${PORT_RAW:-16890}
requests=${REQUESTS:-2000}
clients=${CLIENTS:-8}

./scripts/fetch-model >&2
echo "building (release)" >&2
cargo build --release --locked -p sutra-server -p sutra-embedding-service >&2
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_http() {
  for _ in $(seq 300); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  exit 1
}

SUTRA_ROLE=cache_shard STORAGE_PORT=$shard_port STORAGE_PATH=$work/shard RUST_LOG=warn \
  "$bin/sutra-storage" 2>"$work/shard.log" &
pids+=($!)
wait_http "http://127.0.0.1:$shard_port/health"
service() { # port, extra env...
  local port=$1
  shift
  env EMBEDDING_SERVICE_PORT="$port" SUTRA_CACHE_PORT="$shard_port" RUST_LOG=warn "$@" \
    "$bin/sutra-embedding-service" serve 2>"$work/service-$port.log" &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/health"
}
service "$port_cached"
service "$port_l2" EMBEDDING_CACHE_SIZE=0
service "$port_raw" EMBEDDING_CACHE_SIZE=0 SUTRA_CACHE_ENABLED=false

bench() { "$bin/sutra-validate" bench --json "$@"; }
l1=$(bench --service "http://127.0.0.1:$port_cached" --case hit -n "$requests")
l2=$(bench --service "http://127.0.0.1:$port_l2" --case hit -n "$requests")
miss=$(bench --service "http://127.0.0.1:$port_raw" --case miss -n 200)
cached=$(bench --service "http://127.0.0.1:$port_cached" --case mixed -n "$requests" -c "$clients")
raw=$(bench --service "http://127.0.0.1:$port_raw" --case mixed -n "$((requests / 4))" -c "$clients")

python3 - "$l1" "$l2" "$miss" "$cached" "$raw" "$clients" <<'PY'
import json, sys
l1, l2, miss, cached, raw = (json.loads(a) for a in sys.argv[1:6])
clients = sys.argv[6]
print("| 1-text /embed, 1 client | requests | p50 ms | p99 ms | req/s |")
print("|---|---:|---:|---:|---:|")
for name, row in (("L1 hit", l1), ("L2 hit (L1 off)", l2), ("miss (model)", miss)):
    print(f"| {name} | {row['requests']} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {row['per_second']:.0f} |")
print(f"\ncached/miss speedup at p50: L1 {miss['p50_ms'] / l1['p50_ms']:.0f}x, "
      f"L2 {miss['p50_ms'] / l2['p50_ms']:.0f}x")
print(f"\n70% repeated texts, {clients} clients: with L1 + L2 {cached['per_second']:.0f} req/s "
      f"(p99 {cached['p99_ms']:.2f} ms); model alone {raw['per_second']:.0f} req/s "
      f"(p99 {raw['p99_ms']:.2f} ms); factor {cached['per_second'] / raw['per_second']:.1f}x")
PY
