#!/usr/bin/env bash
# Side-by-side benchmark: Redis (redis-benchmark) and sutra-storage (sutra-bench) on this
# machine, in one run, alternating the servers, with matching durability and payload.
#
#   bench/compare-redis.sh [ROUNDS]        (default 3 rounds; medians are reported)
#
# Needs redis-server and redis-benchmark: `apt-get install redis-server redis-tools`.
# Each measurement gets a fresh server on 127.0.0.1 with a fresh temporary directory:
#   Redis:  appendonly yes, appendfsync everysec|always, no RDB snapshots
#   sutra:  --fsync everysec|always, VECTOR_INDEX=none (Redis indexes no vectors; the HNSW
#           index's background work is measured by compare-ann.sh; VECTOR_INDEX=hnsw to include it)
# Payload: redis-benchmark -d 1200 (a 1200-byte value); sutra-bench -d 176 with a 256-dim
# f32 vector (176 + 1024 = 1200 bytes of content and vector). Ids are random over 100,000
# keys on both (-r 100000).
# Each test (store, then get) is a separate run of the load generator against the same server,
# and the server's CPU time (user + system, with reaped children's, from /proc/<pid>/stat) is
# read before and after it:
# "server CPU µs/op" is that difference over the requests of the test, read once the work the
# test set off in the background is done (Redis's AOF rewrite, sutra's checkpoint), so neither
# server's rewrite is counted in the get test after the stores. The load generator's
# own CPU is not in it. On a machine where both share the cores, CPU per operation is the
# figure that says which server wastes less; throughput mostly follows it.
# Environment: REDIS_PORT (default 16379), SUTRA_PORT (default 16380), KEYSPACE (100000),
# RESULTS (a file to keep the raw rows in), SUTRA_STORAGE (another sutra-storage binary, e.g.
# an older build for a before/after; default the release build made here), CONFIGS (a subset of the config lines below, e.g.
# "everysec 50 1 200000", newline-separated).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
redis_port=${REDIS_PORT:-16379}
sutra_port=${SUTRA_PORT:-16380}
keyspace=${KEYSPACE:-100000}

for tool in redis-server redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || {
    echo "$tool not found: apt-get install redis-server redis-tools" >&2
    exit 1
  }
done

echo "building sutra-storage and sutra-bench (release)" >&2
cargo build --release --locked -p sutra-server -p sutra-bench >&2
sutra_storage=${SUTRA_STORAGE:-target/release/sutra-storage}
sutra_bench=target/release/sutra-bench

work=$(mktemp -d)
raw=${RESULTS:-$work/raw.txt}
: >"$raw"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

source bench/lib.sh

stop_server() {
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

clock_ticks=$(getconf CLK_TCK)

# cpu_ticks PID: the process's user + system CPU time so far, its own and that of its reaped
# children, in clock ticks (fields 14-17 of /proc/PID/stat, counted after the command name,
# which may hold spaces). Redis rewrites its AOF in a forked child; that work is the
# counterpart of sutra's checkpoints and is counted on both sides.
cpu_ticks() {
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  awk '{ print $12 + $13 + $14 + $15 }' <<<"$stat"
}

# settle NAME: waits (at most 60 s) until the background work a test set off is done, so that
# its CPU counts for that test and not the next: Redis's AOF rewrite (its child reaped, whose
# CPU then shows in the parent's), and either server's threads going quiet (sutra's
# checkpoints and syncs; the CPU time stops moving for 0.3 s).
settle() {
  local name=$1 deadline=$((SECONDS + 60)) last now
  if [ "$name" = redis ]; then
    while [ $SECONDS -lt $deadline ] &&
      redis-cli -p "$redis_port" info persistence | grep -Eq '^aof_rewrite_(in_progress|scheduled):1'; do
      sleep 0.1
    done
  fi
  last=$(cpu_ticks "$server_pid")
  while [ $SECONDS -lt $deadline ]; do
    sleep 0.3
    now=$(cpu_ticks "$server_pid")
    [ "$now" = "$last" ] && break
    last=$now
  done
}

# measure NAME FSYNC C P TEST REQUESTS COMMAND...: runs the load generator COMMAND (CSV out)
# and prints "NAME FSYNC C P TEST RPS P99 CPU_US_PER_OP", the server's CPU over the run and
# the background work it set off (see settle).
measure() {
  local name=$1 fsync=$2 clients=$3 pipeline=$4 test=$5 requests=$6 before after
  shift 6
  before=$(cpu_ticks "$server_pid")
  "$@" | awk -F, 'NR > 1 { for (i = 1; i <= NF; i++) gsub(/"/, "", $i); print $2, $7 }' \
    >"$work/row"
  settle "$name"
  after=$(cpu_ticks "$server_pid")
  awk -v n="$name" -v f="$fsync" -v c="$clients" -v p="$pipeline" -v t="$test" \
    -v ticks=$((after - before)) -v hz="$clock_ticks" -v requests="$requests" \
    '{ print n, f, c, p, t, $1, $2, ticks / hz * 1e6 / requests }' "$work/row"
}

# run_redis FSYNC CLIENTS PIPELINE REQUESTS: prints a row per test (store = SET, get = GET).
run_redis() {
  local fsync=$1 clients=$2 pipeline=$3 requests=$4 dir test
  dir=$(mktemp -d "$work/redis.XXXX")
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --save "" \
    --appendonly yes --appendfsync "$fsync" --daemonize no --logfile "$dir/log" &
  server_pid=$!
  wait_for_port "$redis_port"
  for test in set get; do
    measure redis "$fsync" "$clients" "$pipeline" "$([ $test = set ] && echo store || echo get)" \
      "$requests" redis-benchmark -h 127.0.0.1 -p "$redis_port" -t "$test" -d 1200 \
      -c "$clients" -P "$pipeline" -n "$requests" -r "$keyspace" --csv
  done
  stop_server
  rm -rf "$dir"
}

# run_sutra FSYNC CLIENTS PIPELINE REQUESTS: the same for sutra-storage.
run_sutra() {
  local fsync=$1 clients=$2 pipeline=$3 requests=$4 dir test
  dir=$(mktemp -d "$work/sutra.XXXX")
  VECTOR_INDEX=${VECTOR_INDEX:-none} "$sutra_storage" --host 127.0.0.1 --port "$sutra_port" \
    --storage-path "$dir" --fsync "$fsync" 2>"$dir.log" &
  server_pid=$!
  wait_for_port "$sutra_port"
  for test in store get; do
    measure sutra "$fsync" "$clients" "$pipeline" "$test" "$requests" \
      "$sutra_bench" -h 127.0.0.1 -p "$sutra_port" -t "$test" -d 176 -c "$clients" \
      -P "$pipeline" -n "$requests" -r "$keyspace" --csv
  done
  stop_server
  rm -rf "$dir" "$dir.log"
}

# fsync clients pipeline requests
configs=(
  "everysec 50 1 200000"
  "everysec 50 16 1000000"
  "always 50 1 100000"
  "always 50 16 200000"
  "always 1 1 2000"
)
if [ -n "${CONFIGS:-}" ]; then mapfile -t configs <<<"$CONFIGS"; fi

for round in $(seq 1 "$rounds"); do
  for config in "${configs[@]}"; do
    read -r fsync clients pipeline requests <<<"$config"
    echo "round $round: fsync $fsync, -c $clients, -P $pipeline, -n $requests" >&2
    # Alternate which server goes first, so neither always gets the cooler machine.
    if [ $((round % 2)) = 1 ]; then
      run_redis "$fsync" "$clients" "$pipeline" "$requests" >>"$raw"
      run_sutra "$fsync" "$clients" "$pipeline" "$requests" >>"$raw"
    else
      run_sutra "$fsync" "$clients" "$pipeline" "$requests" >>"$raw"
      run_redis "$fsync" "$clients" "$pipeline" "$requests" >>"$raw"
    fi
  done
done

echo
echo "Medians of $rounds rounds; $(nproc) cores; $(redis-server --version | cut -d' ' -f1-3)"
echo
echo "| fsync | -c | -P | test | Redis ops/s | sutra ops/s | sutra/Redis | Redis p99 ms | sutra p99 ms | Redis CPU µs/op | sutra CPU µs/op | CPU sutra/Redis |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
# Median of each (server, config, test) column, then one row per config and test.
sort -k2,2 -k3,3n -k4,4n -k5,5r "$raw" | awk '
  function median(list,   n, values, i, j, t) {
    n = split(list, values, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
      if (values[j] + 0 < values[i] + 0) { t = values[i]; values[i] = values[j]; values[j] = t }
    return (n % 2) ? values[(n + 1) / 2] : (values[n / 2] + values[n / 2 + 1]) / 2
  }
  {
    key = $2 " " $3 " " $4 " " $5
    if (!(key in seen)) { seen[key] = 1; order[++count] = key }
    rps[$1, key] = rps[$1, key] " " $6
    p99[$1, key] = p99[$1, key] " " $7
    cpu[$1, key] = cpu[$1, key] " " $8
  }
  END {
    for (i = 1; i <= count; i++) {
      key = order[i]; split(key, k, " ")
      r = median(rps["redis", key]); s = median(rps["sutra", key])
      rc = median(cpu["redis", key]); sc = median(cpu["sutra", key])
      printf "| %s | %s | %s | %s | %.0f | %.0f | %.2f | %.3f | %.3f | %.2f | %.2f | %.2f |\n",
        k[1], k[2], k[3], k[4], r, s, (r > 0 ? s / r : 0),
        median(p99["redis", key]), median(p99["sutra", key]), rc, sc, (rc > 0 ? sc / rc : 0)
    }
  }'
if [ -n "${RESULTS:-}" ]; then echo; echo "raw rows: $raw"; fi
