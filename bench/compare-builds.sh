#!/usr/bin/env bash
# End to end, two builds side by side: the embedding service's /embed on misses
# (`sutra-validate bench --case miss`: every text new, L1 and L2 off, so each request runs the
# model) and sutra-storage's learn throughput (bench/learn_load.py: LearnConcept with 32 in
# flight, every text new; short texts of about 12 tokens and medium ones of about 129), the
# two builds alternating, medians of rounds, ratios NEW / OLD.
#
#   bench/compare-builds.sh OLD_RELEASE_DIR [NEW_RELEASE_DIR] [ROUNDS]
#
# A *_RELEASE_DIR holds sutra-storage and sutra-embedding-service (`cargo build --release
# -p sutra-server -p sutra-embedding-service`); NEW defaults to this checkout's target/release, built
# here. To measure a change against an older commit:
#   git worktree add /tmp/old <commit> && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old/target \
#     cargo build --release -p sutra-server -p sutra-embedding-service)
#   bench/compare-builds.sh /tmp/old/target/release
# Both builds use this checkout's sutra-validate and the default model; EMBED_THREADS
# (default 2) applies to both. Needs python/bench/.venv (python/bench/compare-redis-py.sh
# makes it) or makes it. By hand only, never in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

old=${1:?usage: bench/compare-builds.sh OLD_RELEASE_DIR [NEW_RELEASE_DIR] [ROUNDS]}
new=${2:-target/release}
rounds=${3:-3}
threads=${EMBED_THREADS:-2}
model=$PWD/models/all-MiniLM-L6-v2
service_port=18888
storage_port=18051

./scripts/fetch-model >&2
if [ "$new" = target/release ]; then
  cargo build --release --locked -p sutra-server -p sutra-embedding-service >&2
fi
venv=python/bench/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c "import sutra_storage_client_tcp" 2>/dev/null || \
  CARGO_TARGET_DIR="$PWD/target/python" "$venv/bin/pip" install --quiet --disable-pip-version-check ./python >&2
validate=target/release/sutra-validate
[ -x "$validate" ] || cargo build --release --locked -p sutra-embedding-service --bin sutra-validate >&2

work=$(mktemp -d)
pid=""
source bench/lib.sh
trap stop_and_clean EXIT

measure() { # label bindir round
  local label=$1 bin=$2 round=$3
  EMBEDDING_SERVICE_PORT=$service_port SUTRA_MODEL_DIR=$model SUTRA_CACHE_ENABLED=false \
    EMBEDDING_CACHE_SIZE=0 EMBED_THREADS=$threads RUST_LOG=warn \
    "$bin/sutra-embedding-service" serve 2>/dev/null &
  pid=$!
  wait_for_http "http://127.0.0.1:$service_port/health"
  rate=$("$validate" bench --service "http://127.0.0.1:$service_port" --case miss -n 300 -c 8 --json \
    | grep -o '"per_second":[0-9.e+-]*' | cut -d: -f2)
  echo "$label miss $rate" >>"$work/rows"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

  rm -rf "$work/data"
  STORAGE_PATH=$work/data SUTRA_MODEL_DIR=$model EMBED_THREADS=$threads RUST_LOG=warn \
    VECTOR_INDEX=${VECTOR_INDEX:-none} \
    "$bin/sutra-storage" --port "$storage_port" --fsync everysec 2>/dev/null &
  pid=$!
  wait_for_http "http://127.0.0.1:$storage_port/health"
  for words in 8 100; do
    count=$([ "$words" = 8 ] && echo 512 || echo 128)
    rate=$("$venv/bin/python" bench/learn_load.py "$storage_port" --count "$count" --words "$words" \
      --tag "$label-$round")
    echo "$label learn-$words $rate" >>"$work/rows"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds" >&2
  if [ $((round % 2)) = 1 ]; then measure old "$old" "$round"; measure new "$new" "$round"
  else measure new "$new" "$round"; measure old "$old" "$round"; fi
done

"$venv/bin/python" - "$work/rows" "$rounds" "$threads" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
print(f"medians of {sys.argv[2]} rounds, EMBED_THREADS={sys.argv[3]}")
print("| case | old | new | new / old |")
print("|---|---:|---:|---:|")
names = {"miss": "/embed misses, 8 clients (requests/s)",
         "learn-8": "learn, short texts, 32 in flight (learns/s)",
         "learn-100": "learn, medium texts, 32 in flight (learns/s)"}
for case, name in names.items():
    value = lambda side: statistics.median(float(r[2]) for r in rows if r[0] == side and r[1] == case)
    old, new = value("old"), value("new")
    print(f"| {name} | {old:.1f} | {new:.1f} | {new / old:.2f}x |")
PY
