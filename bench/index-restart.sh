#!/usr/bin/env bash
# Restart time of sutra-storage with the HNSW index at scale. A release server is filled with
# VECTORS clustered 256-dim unit vectors over TCP (`sutra-bench --prefill --vectors`); once
# the index holds them all, it is restarted twice, after SIGTERM (clean) and after SIGKILL
# (kill -9, the log replayed), and for each start the script reports the seconds until the
# port answers (the store recovered), until a first search is answered (by exact comparison of
# the vectors the rebuilt graph does not hold yet) and how long that search took, and until
# the graph holds every vector again (`index_pending` 0 in /stats); then recall@10 of the
# index (at search breadth EF) against exact search on QUERIES queries, before the restarts
# and after each.
#
#   bench/index-restart.sh                (VECTORS=1000000)
#
# Makes bench/.venv-ann (git-ignored) with numpy from PyPI. By hand only, never in CI: at a
# million vectors it needs some 4 GB of memory, 2 GB of disk and about half an hour on two
# cores. Environment: VECTORS (1000000), QUERIES (100), EF (256), CLUSTERS (1000), SPREAD
# (0.1), M (16),
# EF_CONSTRUCTION (128, the server's default), THREADS (2, HNSW_THREADS), SUTRA_PORT (16383),
# DATA_DIR (as compare-ann.sh: keep the vectors there for later runs).
set -euo pipefail
cd "$(dirname "$0")/.."

vectors=${VECTORS:-1000000}
queries=${QUERIES:-100}
ef=${EF:-256}
clusters=${CLUSTERS:-1000}
spread=${SPREAD:-0.1}
m=${M:-16}
efc=${EF_CONSTRUCTION:-128}
threads=${THREADS:-2}
port=${SUTRA_PORT:-16383}

work=$(mktemp -d)
pid=""
source bench/lib.sh
trap stop_and_clean EXIT
venv=bench/.venv-ann
ensure_venv "$venv" "import numpy" numpy
echo "building sutra-storage and sutra-bench (release)" >&2
cargo build --release --locked -p sutra-server -p sutra-bench >&2
data_dir=${DATA_DIR:-$work}
mkdir -p "$data_dir"
base="$data_dir/clustered-$vectors-$queries-$clusters-$spread.base.f32"
query_file="$data_dir/clustered-$vectors-$queries-$clusters-$spread.queries.f32"
if ! [ -s "$base" ] || ! [ -s "$query_file" ]; then
  "$venv/bin/python" bench/ann_bench.py data "$base" "$query_file" "$vectors" "$queries" 256 \
    "$clusters" "$spread"
fi

now() { date +%s.%N; }
since() { "$venv/bin/python" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
start_server() { start_hnsw_server "$work/data" "$port" "$m" "$efc" "$threads" "$work/server.log"; }

# Seconds since $1 once nothing is pending.
wait_settled() {
  wait_index_settled "$port"
  since "$1"
}

# recall@10 of the index (at ef $ef) against exact search, over HTTP.
recall() { "$venv/bin/python" bench/ann_bench.py http-recall "$port" "$query_file" "$queries" "$ef"; }

echo "filling $vectors vectors" >&2
started=$(now)
start_server
wait_for_port "$port"
target/release/sutra-bench -p "$port" -c 8 -P 16 -t get -n 1 -r "$vectors" -d 64 \
  --prefill --vectors "$base" -q >/dev/null
stored=$(since "$started")
built=$(wait_settled "$started")
before=$(recall)
echo "| event | port answers s | first search at s | its latency ms | graph complete s | recall@10 at ef $ef |"
echo "|---|---:|---:|---:|---:|---:|"
echo "| first fill ($vectors stores over TCP in $stored s) | | | | $built | $before |"

for how in TERM KILL; do
  kill "-$how" "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  started=$(now)
  start_server
  wait_for_port "$port" 600
  listening=$(since "$started")
  latency=$("$venv/bin/python" bench/ann_bench.py http-latency "$port" "$query_file")
  answered=$(since "$started")
  settled=$(wait_settled "$started")
  after=$(recall)
  label=$([ "$how" = TERM ] && echo "restart after SIGTERM" || echo "restart after kill -9")
  echo "| $label | $listening | $answered | $latency | $settled | $after |"
done
echo >&2 "data directory: $(du -sh "$work/data" | cut -f1); server memory at the end: $(ps -o rss= -p "$pid" | awk '{printf "%.0f MB", $1/1024}')"
