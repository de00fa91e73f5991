# Shared by the bench scripts, which source it after `cd` to the repository root.
#
#   stop_and_clean   an EXIT trap: stops the server in $pid (if set), removes $work
#   wait_for_port P  waits up to 30 s for something to listen on 127.0.0.1:P
#   wait_for_http U  waits up to 30 s for URL U to answer 2xx

stop_and_clean() {
  if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "${work:?}"
}

wait_for_port() {
  for _ in $(seq 1 300); do
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
