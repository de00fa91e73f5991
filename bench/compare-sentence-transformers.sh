#!/usr/bin/env bash
# Side-by-side benchmark of the embedding pipeline: sutra-embed-bench (candle, f32) and
# sentence-transformers on PyTorch, the same model folder, texts and thread count, in one run,
# alternating the two, medians of ROUNDS. Prints embeddings/s for both and the ratio
# sutra/PyTorch for batch sizes 1, 8, 32, 64 on short (~15 tokens) and medium (~128 tokens)
# texts, plus sutra's GFLOP/s as a share of the machine's measured matmul peak.
#
#   bench/compare-sentence-transformers.sh [ROUNDS]      (default 3)
#
# Creates a Python virtual environment with torch and sentence-transformers (VENV, default
# bench/.venv-st, git-ignored): the PyPI torch wheel and its dependencies are several GB, so
# this is a benchmark to run by hand, never in CI.
# Environment: THREADS (default: the number of cores), SECONDS_PER_CASE (3), VENV,
# SUTRA_MODEL_DIR (default models/all-MiniLM-L6-v2).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
threads=${THREADS:-$(nproc)}
seconds=${SECONDS_PER_CASE:-3}
venv=${VENV:-bench/.venv-st}
model=${SUTRA_MODEL_DIR:-models/all-MiniLM-L6-v2}

./scripts/fetch-model >&2
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import sentence_transformers" 2>/dev/null; then
  echo "creating $venv with torch and sentence-transformers (large download)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch sentence-transformers >&2
fi
echo "building sutra-embed-bench (release)" >&2
cargo build --release --locked -p sutra-bench --bin sutra-embed-bench >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for round in $(seq "$rounds"); do
  echo "round $round/$rounds: sutra" >&2
  target/release/sutra-embed-bench --model-dir "$model" --threads "$threads" \
    --seconds "$seconds" --json >>"$work/sutra.jsonl"
  echo "round $round/$rounds: sentence-transformers" >&2
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
    "$venv/bin/python" bench/st_bench.py "$model" "$threads" "$seconds" 2>/dev/null \
    >>"$work/torch.jsonl"
done

python3 - "$work/sutra.jsonl" "$work/torch.jsonl" "$threads" "$rounds" <<'PY'
import json, statistics, sys
def load(path):
    cases = {}
    for line in open(path):
        row = json.loads(line)
        cases.setdefault((row["length"], row["batch"]), []).append(row)
    return cases
sutra, torch = load(sys.argv[1]), load(sys.argv[2])
print(f"threads {sys.argv[3]}, medians of {sys.argv[4]} rounds; embeddings/s")
print(f"| text | batch | sutra (candle) | PyTorch | sutra/PyTorch | sutra GFLOP/s | % of matmul peak |")
print(f"|---|---:|---:|---:|---:|---:|---:|")
for key in sorted(sutra, key=lambda k: (k[0] != "short", k[1])):
    ours = statistics.median(r["per_second"] for r in sutra[key])
    theirs = statistics.median(r["per_second"] for r in torch[key])
    gflops = statistics.median(r["gflops"] for r in sutra[key])
    peak = statistics.median(r["peak_gflops"] for r in sutra[key])
    tokens = sutra[key][0]["tokens"]
    print(f"| {key[0]} ({tokens} tokens) | {key[1]} | {ours:.1f} | {theirs:.1f} | "
          f"{ours / theirs:.2f}x | {gflops:.1f} | {100 * gflops / peak:.0f}% of {peak:.0f} |")
PY
