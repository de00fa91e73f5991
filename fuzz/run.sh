#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after another.
#
#   fuzz/run.sh 30                  # what CI runs: every target 30 s
#   fuzz/run.sh 600 engine wal      # ten minutes on two targets
#   FUZZ_JOBS=2 fuzz/run.sh 30      # two targets at a time (one core each)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); it builds with nightly flags, so
# this script sets RUSTC_BOOTSTRAP=1 to use them on the stable toolchain. Each target's
# corpus grows in fuzz/corpus/<target> (not checked in), starting from the checked-in seeds in
# fuzz/seeds/<target>; crashes land in fuzz/artifacts/<target>/. Logs: fuzz/logs/<target>.log.
# Prints one line per target (executions, coverage, corpus) and exits non-zero if any target
# found a crash.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-30}"
shift || true
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

dict_for() {
  case "$1" in
    request | response) echo dict/protocol.dict ;;
    text) echo dict/text.dict ;;
    service_json) echo dict/json.dict ;;
  esac
}

cargo fuzz build
mkdir -p logs
# One target: runs it, then prints its summary line; exit status non-zero on a finding.
run_one() {
  local target="$1" status dict execs last cov ft corp
  mkdir -p "corpus/$target"
  local dirs=("corpus/$target")
  [ -d "seeds/$target" ] && dirs+=("seeds/$target")
  local args=(-max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1)
  dict="$(dict_for "$target")"
  [ -n "$dict" ] && args+=(-dict="$dict")
  if cargo fuzz run "$target" "${dirs[@]}" -- "${args[@]}" >"logs/$target.log" 2>&1; then
    status=ok
  else
    status=FAILED
  fi
  execs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "logs/$target.log" | tail -1 | awk '{print $2}' || true)"
  last="$(grep -E '^#[0-9]+' "logs/$target.log" | tail -1 || true)"
  cov="$(echo "$last" | grep -o 'cov: [0-9]*' | awk '{print $2}' || true)"
  ft="$(echo "$last" | grep -o 'ft: [0-9]*' | awk '{print $2}' || true)"
  corp="$(echo "$last" | grep -o 'corp: [0-9]*' | awk '{print $2}' || true)"
  printf '%-13s %-6s %6ss  execs %-10s cov %-6s ft %-6s corpus %s\n' \
    "$target" "$status" "$seconds" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}"
  [ "$status" = ok ]
}

# FUZZ_JOBS targets at a time (each libFuzzer process uses one core); default 1.
jobs="${FUZZ_JOBS:-1}"
failed=()
pids=()
names=()
for target in "${targets[@]}"; do
  run_one "$target" &
  pids+=($!)
  names+=("$target")
  if [ ${#pids[@]} -ge "$jobs" ]; then
    if ! wait "${pids[0]}"; then failed+=("${names[0]}"); fi
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for index in "${!pids[@]}"; do
  if ! wait "${pids[$index]}"; then failed+=("${names[$index]}"); fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets that failed: ${failed[*]} (see fuzz/logs/ and fuzz/artifacts/)" >&2
  for target in "${failed[@]}"; do
    tail -40 "logs/$target.log" >&2
  done
  exit 1
fi
