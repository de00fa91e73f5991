#!/usr/bin/env bash
# Side-by-side benchmark of the embedding pipeline against ONNX Runtime (what fastembed and most
# CPU deployments of text-embeddings-inference run): sutra-embed-bench and bench/ort_bench.py on
# the same model folder, texts, cases and thread count, in one run, alternating, medians of
# ROUNDS. Prints embeddings/s of sutra (f32 and int8), ONNX Runtime f32 and dynamic INT8 for
# batch sizes 1, 8, 32, 64 on short (~12 tokens) and medium (~129 tokens) texts, the ratios,
# sutra's share of the machine's matmul peak, and how close ONNX Runtime's INT8 vectors stay to
# its f32 ones on the golden texts.
#
#   bench/compare-onnxruntime.sh [ROUNDS]      (default 3)
#
# Creates a Python virtual environment with onnxruntime and torch (VENV, default
# bench/.venv-ort, git-ignored; torch only exports the model: torch.onnx.export of the folder's
# BERT with dynamic batch and sequence axes, opset 17, then onnxruntime's quantize_dynamic with
# QInt8, into bench/.onnx/). Several GB: a benchmark to run by hand, never in CI.
# Environment: THREADS (default: the number of cores), SECONDS_PER_CASE (3), VENV,
# SUTRA_MODEL_DIR (default models/all-MiniLM-L6-v2).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
threads=${THREADS:-$(nproc)}
seconds=${SECONDS_PER_CASE:-3}
venv=${VENV:-bench/.venv-ort}
model=${SUTRA_MODEL_DIR:-models/all-MiniLM-L6-v2}
onnx=bench/.onnx

./scripts/fetch-model >&2
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import onnxruntime, torch, transformers" 2>/dev/null; then
  echo "creating $venv with onnxruntime, torch and transformers (large download)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch onnxruntime onnx transformers >&2
fi
if [ ! -f "$onnx/model.onnx" ] || [ ! -f "$onnx/model-int8.onnx" ]; then
  echo "exporting $model to ONNX (f32 and dynamic INT8)" >&2
  "$venv/bin/python" bench/ort_bench.py export "$model" "$onnx" 2>/dev/null
fi
echo "building sutra-embed-bench (release)" >&2
cargo build --release --locked -p sutra-bench --bin sutra-embed-bench >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for round in $(seq "$rounds"); do
  for precision in f32 int8; do
    echo "round $round/$rounds: sutra $precision" >&2
    target/release/sutra-embed-bench --model-dir "$model" --threads "$threads" \
      --seconds "$seconds" --precision "$precision" --json >>"$work/sutra-$precision.jsonl"
  done
  for variant in f32 int8; do
    file=$onnx/model.onnx
    [ "$variant" = int8 ] && file=$onnx/model-int8.onnx
    echo "round $round/$rounds: onnxruntime $variant" >&2
    OMP_NUM_THREADS=$threads "$venv/bin/python" bench/ort_bench.py bench "$file" "$model" \
      "$threads" "$seconds" 2>/dev/null >>"$work/ort-$variant.jsonl"
  done
done
"$venv/bin/python" bench/ort_bench.py quality "$onnx/model.onnx" "$onnx/model-int8.onnx" \
  "$model" embed/tests/data/minilm-l6-v2.json >"$work/quality.json" 2>/dev/null

python3 - "$work" "$threads" "$rounds" <<'PY'
import json, statistics, sys
work, threads, rounds = sys.argv[1:4]
def load(name):
    cases = {}
    for line in open(f"{work}/{name}.jsonl"):
        row = json.loads(line)
        cases.setdefault((row["length"], row["batch"]), []).append(row)
    return cases
sutra, sutra8 = load("sutra-f32"), load("sutra-int8")
f32, int8 = load("ort-f32"), load("ort-int8")
median = lambda rows, key="per_second": statistics.median(r[key] for r in rows)
print(f"threads {threads}, medians of {rounds} rounds; embeddings/s")
print("| text | batch | sutra f32 | ORT f32 | sutra / ORT f32 | sutra INT8 | ORT INT8 | sutra INT8 / ORT INT8 | sutra f32 GFLOP/s (% of matmul peak) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for key in sorted(sutra, key=lambda k: (k[0] != "short", k[1])):
    ours, theirs = median(sutra[key]), median(f32[key])
    ours8, theirs8 = median(sutra8[key]), median(int8[key])
    gflops, peak = median(sutra[key], "gflops"), median(sutra[key], "peak_gflops")
    print(f"| {key[0]} ({sutra[key][0]['tokens']} tokens) | {key[1]} | {ours:.1f} | {theirs:.1f} | "
          f"{ours / theirs:.2f}x | {ours8:.1f} | {theirs8:.1f} | {ours8 / theirs8:.2f}x | "
          f"{gflops:.1f} ({100 * gflops / peak:.0f}% of {peak:.0f}) |")
quality = json.load(open(f"{work}/quality.json"))
print(f"\nONNX Runtime INT8 vs its f32, {quality['texts']} golden texts:")
for name in ("full", "mrl256"):
    q = quality[name]
    print(f"- {name}: min cosine {q['min_cosine']:.4f}, mean {q['mean_cosine']:.4f}, "
          f"5-NN overlap {100 * q['knn5_overlap']:.0f}%")
PY
