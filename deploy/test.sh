#!/usr/bin/env bash
# The deployment, end to end: images from the host's binaries (deploy/Dockerfile.host, the
# HAProxy image from deploy/haproxy/Dockerfile), the seed's topology from deploy/compose.yml
# with podman-compose, then the seed's checks against it:
#   /health of storage and shard (vector_dimension 256), /embed (256 values), /cache/stats,
#   POST /api/learn (201, learning through HAProxy), `sutra-validate check`, one ML-base replica
#   killed with requests still answered, and `down` + `up` with the learned concept and the L2
#   entries still there (named volumes).
# Everything is torn down (volumes too) however it ends.
#
#   deploy/test.sh            (root; runs deploy/setup-podman.sh when podman is not set up)
#
# Binaries: $CARGO_TARGET_DIR/debug (or target/debug) by default, PROFILE=release for the
# release ones; built with cargo when missing. Run by CI after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PROFILE:-debug}
bin=${CARGO_TARGET_DIR:-$PWD/target}/$profile
compose=/opt/pc-venv/bin/podman-compose
project=sutra-deploy-test

if ! command -v podman >/dev/null 2>&1 || [ ! -x "$compose" ] \
    || ! podman image exists docker.io/library/debian:bookworm-slim; then
  echo "== setting up podman (deploy/setup-podman.sh)"
  deploy/setup-podman.sh
fi
for binary in sutra-storage sutra-embedding-service sutra-validate; do
  if [ ! -x "$bin/$binary" ]; then
    flag=$([ "$profile" = release ] && echo --release || true)
    cargo build $flag --locked -p sutra-server -p sutra-embedding-service
    break
  fi
done
./scripts/fetch-model >/dev/null
models=$(dirname "$(realpath models/all-MiniLM-L6-v2)")

echo "== images from the host's binaries ($bin)"
context=$(mktemp -d)
cleanup_context() { rm -rf "$context"; }
# Without their debug information (a debug build's binaries are ~350 MB each, nearly all of it
# DWARF): the layers podman commits are a fraction of the size.
for binary in sutra-storage sutra-embedding-service sutra-validate; do
  objcopy --strip-debug "$bin/$binary" "$context/$binary" 2>/dev/null \
    || cp "$bin/$binary" "$context/$binary"
done
cp deploy/healthcheck "$context/"
# A build is tried up to three times: on a busy machine podman has failed to commit a layer
# ("io: read/write on closed pipe") with nothing wrong in the build itself.
build() {
  for attempt in 1 2 3; do
    if podman build --pull=never -q "$@" >/dev/null; then return 0; fi
    echo "podman build $* failed (attempt $attempt of 3)" >&2
    sleep 2
  done
  return 1
}
build -f deploy/Dockerfile.host --target storage -t localhost/sutra-storage:latest "$context"
build -f deploy/Dockerfile.host --target embedding-service \
  -t localhost/sutra-embedding-service:latest "$context"
build -f deploy/haproxy/Dockerfile -t localhost/sutra-ml-base-lb:latest deploy
cleanup_context

export SUTRA_MODELS=$models
up() { timeout 300 "$compose" -p "$project" -f deploy/compose.yml up -d --no-build >/dev/null 2>&1; }
down() { timeout 120 "$compose" -p "$project" -f deploy/compose.yml down "$@" >/dev/null 2>&1 || true; }
teardown() {
  status=$?
  if [ "$status" != 0 ]; then
    echo "== logs (a check failed)"
    for name in $(podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}'); do
      echo "--- $name"; podman logs --tail 20 "$name" 2>&1 || true
    done
  fi
  down -v
  exit "$status"
}
trap teardown EXIT

checks=0
ok() { checks=$((checks + 1)); echo "ok $checks - $*"; }
fail() { echo "not ok - $*" >&2; exit 1; }

wait_healthy() { # url
  for _ in $(seq 1 240); do
    if curl -sf "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  fail "$1 never answered"
}

echo "== podman-compose up"
down -v
up || fail "podman-compose up"
wait_healthy http://127.0.0.1:50051/health
wait_healthy http://127.0.0.1:50052/health
wait_healthy http://127.0.0.1:8888/health
ok "the stack is up: $(podman ps --filter "label=io.podman.compose.project=$project" --format '{{.Names}}' | tr '\n' ' ')"

json() { python3 -c "import json, sys; print(eval(sys.argv[1], {}, {'d': json.load(sys.stdin)}))" "$1"; }

[ "$(curl -sf http://127.0.0.1:50051/health | json 'd["vector_dimension"]')" = 256 ] \
  && ok "storage /health: vector_dimension 256" || fail "storage /health"
shard=$(curl -sf http://127.0.0.1:50052/health)
[ "$(json 'd["vector_dimension"], d["role"]' <<<"$shard")" = "(256, 'cache_shard')" ] \
  && ok "shard /health: vector_dimension 256, role cache_shard" || fail "shard /health: $shard"

embedded=$(curl -sf http://127.0.0.1:8888/embed -d '{"texts": ["deployed with compose", "the seed topology"]}')
[ "$(json 'len(d["embeddings"]), len(d["embeddings"][0]), d["dimension"]' <<<"$embedded")" = "(2, 256, 256)" ] \
  && ok "/embed: 2 vectors of 256 values" || fail "/embed: $embedded"
stats=$(curl -sf http://127.0.0.1:8888/cache/stats)
[ "$(json 'd["l2"]["enabled"], d["total"]["requests"] >= 2' <<<"$stats")" = "(True, True)" ] \
  && ok "/cache/stats: L2 on the shard enabled" || fail "/cache/stats: $stats"

learned=$(curl -s -w '\n%{http_code}' http://127.0.0.1:50051/api/learn \
  -d '{"content": "learned through the model pool", "metadata": {"type": "note"}}')
[ "$(tail -1 <<<"$learned")" = 201 ] || fail "POST /api/learn: $learned"
concept_id=$(head -1 <<<"$learned" | json 'd["concept_id"]')
ok "POST /api/learn: 201 ($concept_id), embedded through HAProxy"

"$bin/sutra-validate" check --storage 127.0.0.1:50051 --service http://127.0.0.1:8888 >"$context.validate" 2>&1 \
  || { cat "$context.validate"; fail "sutra-validate check"; }
ok "sutra-validate check: $(grep -c PASS "$context.validate") checks passed"
rm -f "$context.validate"

echo "== one ML-base replica killed"
podman kill "$(podman ps --filter "label=io.podman.compose.project=$project" --filter name=ml-base-1 --format '{{.Names}}')" >/dev/null
for index in $(seq 1 20); do
  code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8888/embed \
    -d "{\"texts\": [\"after the kill $index\"]}")
  [ "$code" = 200 ] || fail "/embed answered $code after ml-base-1 was killed"
done
ok "20 new texts embedded after ml-base-1 was killed"
# HAProxy's view of ml-base-2, polled for up to 15 s: a replica marked down by a health check
# during start-up is back UP only after `rise` good checks, which may still be under way.
replica_up() {
  stat=$(exec 3<>/dev/tcp/127.0.0.1/9999 && echo "show stat" >&3 && cat <&3)
  grep '^ml_base_replicas,ml-base-2,' <<<"$stat" | grep -q ',UP,'
}
for _ in $(seq 1 30); do replica_up && break; sleep 0.5; done
replica_up && ok "HAProxy statistics (show stat on 9999): ml-base-2 UP" || fail "show stat: $stat"

echo "== down, then up: the volumes keep the data"
l2_before=$(curl -sf http://127.0.0.1:50052/stats | json 'd["concepts"]')
down
up || fail "podman-compose up (again)"
wait_healthy http://127.0.0.1:50051/health
wait_healthy http://127.0.0.1:50052/health
got=$(printf 'GET %s\nQUIT\n' "$concept_id" | python3 -c "
import socket, sys
s = socket.create_connection(('127.0.0.1', 50051)); s.sendall(sys.stdin.buffer.read())
data = b''
while chunk := s.recv(65536): data += chunk
print(data.decode())")
grep -q '"content":"learned through the model pool"' <<<"$got" \
  && ok "the learned concept is back after down/up" || fail "learned concept lost: $got"
l2_after=$(curl -sf http://127.0.0.1:50052/stats | json 'd["concepts"]')
[ "$l2_after" -ge "$l2_before" ] && [ "$l2_after" -gt 0 ] \
  && ok "the L2 shard still holds its $l2_after entries" || fail "L2 entries: $l2_before -> $l2_after"

echo "deploy: $checks checks passed"
