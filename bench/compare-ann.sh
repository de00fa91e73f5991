#!/usr/bin/env bash
# Approximate nearest-neighbour search: the engine's HNSW index (sutra-ann-bench, in process)
# next to hnswlib and faiss's IndexHNSWFlat on the same vectors, the same M and
# ef_construction, alternating, medians of rounds: build time, memory per vector, and at each
# search breadth (ef) the recall@10 and queries/s on one thread (one query per call) and on
# THREADS threads (sutra: THREADS callers; hnswlib and faiss: batches on THREADS threads).
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
# SIDES (sutra,hnswlib,faiss).
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
sides=${SIDES:-sutra,hnswlib,faiss}
data_kind=${DATA:-clustered}

venv=bench/.venv-ann
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import hnswlib, faiss, numpy" 2>/dev/null \
  || "$venv/bin/pip" install --quiet --disable-pip-version-check hnswlib faiss-cpu numpy
echo "building sutra-ann-bench (release)" >&2
cargo build --release --locked -p sutra-bench --bin sutra-ann-bench --bin sutra-embed >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base="$work/base.f32"
query_file="$work/queries.f32"

if [ "$data_kind" = text ]; then
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
    esac
  done
done

"$venv/bin/python" bench/ann_bench.py report "$results" "$threads" "$data_kind" "$vectors"
