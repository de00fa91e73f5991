#!/usr/bin/env bash
# Exact nearest-neighbour search: sutra-storage's Search (exact, over its TCP protocol, the
# server on THREADS threads) next to faiss's IndexFlatIP (in process, THREADS OpenMP threads)
# on the same number of 256-dim vectors, one query at a time, alternating, medians of rounds.
#
#   bench/compare-exact-search.sh [ROUNDS]       (default 3)
#
# Makes bench/.venv-ann (git-ignored) with faiss-cpu and numpy from PyPI. By hand only, never
# in CI. Environment: VECTORS (200000, the issue's anchor size), K (10), SECONDS_PER_CASE (5),
# THREADS (2), SUTRA_PORT (16381).
#
# sutra-bench fills the store with one repeated vector and searches for it; the work of an
# exact search (a dot product and a norm per stored vector, then a top-k) does not depend on
# the values, so the rate is that of any data of this size. faiss searches random vectors.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
vectors=${VECTORS:-200000}
k=${K:-10}
seconds=${SECONDS_PER_CASE:-5}
threads=${THREADS:-2}
port=${SUTRA_PORT:-16381}

work=$(mktemp -d)
pid=""
source bench/lib.sh
trap stop_and_clean EXIT
venv=bench/.venv-ann
ensure_venv "$venv" "import faiss, numpy" faiss-cpu numpy
echo "building sutra-storage and sutra-bench (release)" >&2
cargo build --release --locked -p sutra-server -p sutra-bench >&2

# One server for every round: filling 200k concepts takes longer than the searches.
STORAGE_PATH="$work/data" RUST_LOG=warn VECTOR_INDEX=exact \
  target/release/sutra-storage --port "$port" --fsync everysec 2>/dev/null &
pid=$!
wait_for_port "$port" || { echo "sutra-storage did not start" >&2; exit 1; }
echo "filling $vectors vectors" >&2
target/release/sutra-bench -p "$port" -c 8 -P 16 -t store -n "$vectors" -r "$vectors" \
  --prefill -d 64 -q >/dev/null

sutra_round() {
  target/release/sutra-bench -p "$port" -c 1 -P 1 -t search --search-k "$k" --exact \
    --duration "$seconds" --json 2>/dev/null \
    | "$venv/bin/python" -c 'import json,sys; r=json.load(sys.stdin); t=r["tests"][0]; print(t["rps"], t["latency_ms"]["p50"], t["latency_ms"]["p99"])'
}

faiss_round() {
  OMP_NUM_THREADS=$threads "$venv/bin/python" - "$vectors" "$k" "$seconds" <<'PY'
import sys, time
import numpy as np, faiss
n, k, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
rng = np.random.default_rng(1)
data = rng.standard_normal((n, 256), dtype=np.float32)
faiss.normalize_L2(data)
index = faiss.IndexFlatIP(256)
index.add(data)
queries = rng.standard_normal((1000, 256), dtype=np.float32)
faiss.normalize_L2(queries)
latencies = []
started = time.perf_counter()
i = 0
while time.perf_counter() - started < seconds:
    t = time.perf_counter()
    index.search(queries[i % 1000 : i % 1000 + 1], k)
    latencies.append((time.perf_counter() - t) * 1000)
    i += 1
elapsed = time.perf_counter() - started
latencies.sort()
print(i / elapsed, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)])
PY
}

: >"$work/sutra" ; : >"$work/faiss"
for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds" >&2
  if [ $((round % 2)) = 1 ]; then sutra_round >>"$work/sutra"; faiss_round >>"$work/faiss"
  else faiss_round >>"$work/faiss"; sutra_round >>"$work/sutra"; fi
done

"$venv/bin/python" - "$work/sutra" "$work/faiss" "$vectors" "$k" "$threads" <<'PY'
import statistics, sys
def rows(path):
    return [list(map(float, line.split())) for line in open(path) if line.strip()]
sutra, faiss = rows(sys.argv[1]), rows(sys.argv[2])
med = lambda rs, i: statistics.median(r[i] for r in rs)
print(f"exact top-{sys.argv[4]} of {int(sys.argv[3]):,} 256-dim vectors, {sys.argv[5]} threads, one query at a time, medians of {len(sutra)} rounds")
print("| engine | queries/s | p50 ms | p99 ms |")
print("|---|---:|---:|---:|")
print(f"| sutra-storage Search (exact, over TCP) | {med(sutra,0):,.0f} | {med(sutra,1):.2f} | {med(sutra,2):.2f} |")
print(f"| faiss IndexFlatIP (in process) | {med(faiss,0):,.0f} | {med(faiss,1):.2f} | {med(faiss,2):.2f} |")
print(f"sutra / faiss: {med(sutra,0) / med(faiss,0):.2f}x")
PY
