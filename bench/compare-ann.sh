#!/usr/bin/env bash
# Approximate nearest-neighbour search: the engine's HNSW index (sutra-ann-bench, in process)
# next to hnswlib and faiss's IndexHNSWFlat on the same vectors, the same M and
# ef_construction, alternating, medians of rounds: build time, memory per vector, and at each
# search breadth (ef) the recall@10 and queries/s on one thread (one query per call) and on
# THREADS threads (sutra: THREADS callers; hnswlib and faiss: batches on THREADS threads).
# The `tcp` side is the same index behind sutra-storage's protocol: a release server filled
# over TCP by `sutra-bench --prefill --vectors`, then `sutra-bench -t search --queries` with
# one connection and with THREADS (one query per request, -P 1): queries/s, p50 and p99, and
# the share of the in-process rate the protocol keeps (the load generator shares the cores).
#
#   bench/compare-ann.sh [ROUNDS]        (default 3)
#
# Data (DATA): `clustered` (default): VECTORS unit vectors around CLUSTERS centres with
# per-value spread SPREAD, and QUERIES more drawn the same way; or `text`: the project's own
# model embeds paragraphs of the documentation Debian ships under /usr/share/doc (README,
# changelog and copyright files; as many as there are, up to VECTORS), the queries being
# QUERIES of those paragraphs' first sentences, embedded as queries.
#
# Makes bench/.venv-ann (git-ignored) with hnswlib, faiss-cpu and numpy from PyPI. By hand
# only, never in CI. Environment: VECTORS (200000), QUERIES (1000), CLUSTERS (1000), SPREAD
# (0.1), M (16), EF_CONSTRUCTION (200), EFS (16,32,64,128), THREADS (2), SECONDS_PER_CASE (3),
# SIDES (sutra,hnswlib,faiss,tcp), SUTRA_PORT (16382, the tcp side's server), DATA_DIR (unset: the vectors are made in a temporary folder and
# removed; set: they are kept there, one pair of files per data set, and reused by later runs,
# which saves embedding the text again).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
vectors=${VECTORS:-200000}
queries=${QUERIES:-1000}
clusters=${CLUSTERS:-1000}
spread=${SPREAD:-0.1}
m=${M:-16}
efc=${EF_CONSTRUCTION:-200}
efs=${EFS:-16,32,64,128}
threads=${THREADS:-2}
seconds=${SECONDS_PER_CASE:-3}
sides=${SIDES:-sutra,hnswlib,faiss,tcp}
port=${SUTRA_PORT:-16382}
data_kind=${DATA:-clustered}

work=$(mktemp -d)
pid=""
source bench/lib.sh
trap stop_and_clean EXIT
venv=bench/.venv-ann
ensure_venv "$venv" "import hnswlib, faiss, numpy" hnswlib faiss-cpu numpy
echo "building sutra-ann-bench and sutra-storage (release)" >&2
cargo build --release --locked -p sutra-bench -p sutra-server >&2
data_dir=${DATA_DIR:-$work}
mkdir -p "$data_dir"
if [ "$data_kind" = text ]; then
  name="text-$vectors-$queries"
else
  name="clustered-$vectors-$queries-$clusters-$spread"
fi
base="$data_dir/$name.base.f32"
query_file="$data_dir/$name.queries.f32"

if [ -s "$base" ] && [ -s "$query_file" ]; then
  echo "reusing $base and $query_file" >&2
  vectors=$(( $(stat -c %s "$base") / 1024 ))
elif [ "$data_kind" = text ]; then
  echo "collecting paragraphs from /usr/share/doc" >&2
  "$venv/bin/python" bench/ann_bench.py paragraphs /usr/share/doc "$vectors" "$queries" \
    "$work/paragraphs.json" "$work/questions.json"
  echo "embedding them with the default model (this takes a while)" >&2
  target/release/sutra-embed --json --task document < "$work/paragraphs.json" > "$work/paragraphs.vectors.json"
  target/release/sutra-embed --json --task query < "$work/questions.json" > "$work/questions.vectors.json"
  "$venv/bin/python" bench/ann_bench.py json2f32 "$work/paragraphs.vectors.json" "$base"
  "$venv/bin/python" bench/ann_bench.py json2f32 "$work/questions.vectors.json" "$query_file"
  vectors=$(( $(stat -c %s "$base") / 1024 ))
else
  "$venv/bin/python" bench/ann_bench.py data "$base" "$query_file" "$vectors" "$queries" 256 \
    "$clusters" "$spread"
fi

# The tcp side: one JSON line like the others' (build = fill over TCP until the index has
# taken every vector in; cases = queries/s and latency per ef and connection count).
tcp_round() {
  rm -rf "$work/data"
  start_hnsw_server "$work/data" "$port" "$m" "$efc" "$threads" /dev/null
  wait_for_port "$port"
  local started build cases="" ef clients line
  started=$(date +%s.%N)
  target/release/sutra-bench -p "$port" -c 8 -P 16 -t get -n 1 -r "$vectors" -d 64 \
    --prefill --vectors "$base" -q >/dev/null
  wait_index_settled "$port"
  build=$("$venv/bin/python" -c "import time; print(round(time.time() - $started, 2))")
  for ef in ${efs//,/ }; do
    for clients in 1 "$threads"; do
      line=$(target/release/sutra-bench -p "$port" -c "$clients" -P 1 -t search \
        --queries "$query_file" --ef "$ef" --search-k 10 --duration "$seconds" --json \
        | "$venv/bin/python" -c 'import json,sys; t=json.load(sys.stdin)["tests"][0]; print(json.dumps({"qps": t["rps"], "p50_ms": t["latency_ms"]["p50"], "p99_ms": t["latency_ms"]["p99"], "errors": t.get("errors", 0)}))')
      cases="$cases${cases:+,}{\"ef\": $ef, \"threads\": $clients, \"tcp\": $line}"
    done
  done
  printf '{"side": "tcp", "build_s": %s, "bytes_per_vector": %s, "cases": [%s]}\n' "$build" \
    "$(stats_field "$port" index_bytes_per_vector)" "$cases"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

results="$work/results.jsonl"
for round in $(seq 1 "$rounds"); do
  for side in ${sides//,/ }; do
    echo "round $round: $side" >&2
    case "$side" in
      sutra)
        target/release/sutra-ann-bench --base "$base" --queries "$query_file" --m "$m" \
          --ef-construction "$efc" --build-threads "$threads" --ef "$efs" \
          --threads "1,$threads" --seconds "$seconds" >> "$results" ;;
      hnswlib|faiss)
        "$venv/bin/python" bench/ann_bench.py "$side" "$base" "$query_file" 256 "$m" "$efc" \
          "$threads" "$efs" "$threads" 10 "$seconds" >> "$results" ;;
      tcp) tcp_round >> "$results" ;;
    esac
  done
done

"$venv/bin/python" bench/ann_bench.py report "$results" "$threads" "$data_kind" "$vectors"
