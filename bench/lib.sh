# Shared by the bench scripts, which source it after `cd` to the repository root.
#
#   stop_and_clean   an EXIT trap: stops the server in $pid (if set), removes $work
#   wait_for_port P [S]  waits up to S seconds (30) for something to listen on 127.0.0.1:P
#   wait_for_http U  waits up to 30 s for URL U to answer 2xx
#   ensure_venv, start_hnsw_server, stats_field, wait_index_settled: below

stop_and_clean() {
  if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "${work:?}"
}

wait_for_port() {
  for _ in $(seq 1 $(( ${2:-30} * 10 ))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

wait_for_http() {
  for _ in $(seq 1 300); do
    if curl -sf "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers $1" >&2
  return 1
}

# ensure_venv DIR CHECK PACKAGE...   makes the venv DIR unless it exists, and installs the
#                                    packages from PyPI unless python -c CHECK succeeds
ensure_venv() {
  local dir=$1 check=$2
  shift 2
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/python" -c "$check" 2>/dev/null \
    || "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
}

# start_hnsw_server DIR PORT M EF_CONSTRUCTION THREADS LOG
#   starts the release sutra-storage over data directory DIR with an HNSW index (HNSW_M,
#   HNSW_EF_CONSTRUCTION, HNSW_THREADS), stderr appended to LOG; its pid in $pid
start_hnsw_server() {
  STORAGE_PATH="$1" RUST_LOG=warn VECTOR_INDEX=hnsw HNSW_M="$3" HNSW_EF_CONSTRUCTION="$4" \
    HNSW_THREADS="$5" target/release/sutra-storage --port "$2" --fsync everysec 2>>"$6" &
  pid=$!
}

# stats_field PORT NAME   prints one counter of the server's /stats
stats_field() {
  curl -sf "http://127.0.0.1:$1/stats" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

# wait_index_settled PORT   waits until the server's graph holds every stored vector
wait_index_settled() {
  while [ "$(stats_field "$1" index_pending)" != 0 ]; do sleep 0.2; done
}
