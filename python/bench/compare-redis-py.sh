#!/usr/bin/env bash
# The Python client of sutra-storage next to redis-py (with hiredis) against Redis, on this
# machine, in one run, alternating the two sides, one connection each, 1.2 KB values:
# single stores, single reads, reads kept in flight together from asyncio (asyncio.gather of 100
# against a pipeline of 100 GETs and against redis.asyncio's gather of 100; AsyncPipeline), a
# blocking pipeline of 100 reads, and 100-key reads (get_many against MGET). See bench.py.
#
#   python/bench/compare-redis-py.sh [ROUNDS]     (default 3; medians are reported)
#
# Needs redis-server (`apt-get install redis-server`). Makes python/bench/.venv (git-ignored)
# with redis[hiredis] from PyPI and this package (pip install ./python). Redis runs with
# appendonly yes, appendfsync everysec, no RDB; sutra-storage (release) with --fsync everysec
# and VECTOR_INDEX=none (Redis indexes no vectors);
# each on a fresh temporary directory. By hand only, never in CI.
# Environment: REDIS_PORT (default 16379), SUTRA_PORT (default 16380), SECONDS_PER_CASE (2: how
# long each case runs, on each side).
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds=${1:-3}
redis_port=${REDIS_PORT:-16379}
sutra_port=${SUTRA_PORT:-16380}
seconds=${SECONDS_PER_CASE:-2}
command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install redis-server" >&2; exit 1; }

venv=python/bench/.venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import redis, hiredis" 2>/dev/null \
  || "$venv/bin/pip" install --quiet --disable-pip-version-check "redis[hiredis]>=5"
echo "building the Python package and sutra-storage (release)" >&2
CARGO_TARGET_DIR="$PWD/target/python" "$venv/bin/pip" install --quiet --disable-pip-version-check \
  --force-reinstall --no-deps ./python >&2
cargo build --release --locked -p sutra-server >&2

work=$(mktemp -d)
pid=""
source bench/lib.sh
trap stop_and_clean EXIT

run_side() { # side round -> one JSON line in $work/<side>.jsonl
  local side=$1 dir="$work/$1-$2"
  mkdir -p "$dir"
  if [ "$side" = redis ]; then
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --save "" \
      --appendonly yes --appendfsync everysec --daemonize no >/dev/null &
    pid=$!
    wait_for_port "$redis_port"
    "$venv/bin/python" python/bench/bench.py redis "$redis_port" --seconds "$seconds" >>"$work/redis.jsonl"
  else
    STORAGE_PATH="$dir" RUST_LOG=warn VECTOR_INDEX=${VECTOR_INDEX:-none} target/release/sutra-storage --port "$sutra_port" \
      --fsync everysec 2>/dev/null &
    pid=$!
    wait_for_port "$sutra_port"
    "$venv/bin/python" python/bench/bench.py sutra "$sutra_port" --seconds "$seconds" >>"$work/sutra.jsonl"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds" >&2
  if [ $((round % 2)) = 1 ]; then run_side redis "$round"; run_side sutra "$round"
  else run_side sutra "$round"; run_side redis "$round"; fi
done

"$venv/bin/python" - "$work/redis.jsonl" "$work/sutra.jsonl" "$rounds" "$(redis-server --version | cut -d' ' -f1-3)" <<'PY'
import json, statistics, sys
redis = [json.loads(line) for line in open(sys.argv[1])]
sutra = [json.loads(line) for line in open(sys.argv[2])]
print(f"medians of {sys.argv[3]} rounds; {sys.argv[4]}; one connection per side")
print("| case | redis-py ops/s | sutra ops/s | sutra / redis-py |")
print("|---|---:|---:|---:|")
names = {"set": "store / SET", "get": "get / GET",
         "concurrent": "100 in flight: asyncio.gather / pipeline of 100 GET",
         "gather": "asyncio.gather of 100 reads / redis.asyncio gather of 100 GET",
         "async_pipeline": "asyncio: AsyncPipeline of 100 reads / pipeline of 100 GET",
         "pipeline": "pipeline of 100 reads: pipeline() / pipeline of 100 GET",
         "many": "get_many(100) / MGET 100 (keys/s)"}
for case, name in names.items():
    r = statistics.median(row[case] for row in redis)
    s = statistics.median(row[case] for row in sutra)
    print(f"| {name} | {r:,.0f} | {s:,.0f} | {s / r:.2f}x |")
PY
