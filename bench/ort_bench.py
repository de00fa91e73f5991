"""ONNX Runtime, the engine behind fastembed and most CPU text-embeddings-inference
deployments, on the same model, texts and cases as sutra-embed-bench, for
bench/compare-onnxruntime.sh.

    python bench/ort_bench.py export MODEL_DIR OUT_DIR
        torch.onnx.export of the folder's BERT (dynamic batch and sequence axes, opset 17) to
        OUT_DIR/model.onnx, then onnxruntime's quantize_dynamic (QInt8) to model-int8.onnx.
    python bench/ort_bench.py bench ONNX_FILE MODEL_DIR THREADS SECONDS [BATCH_SIZES]
        embeddings/s per case, one JSON object a line: tokenize (the folder's tokenizer.json,
        truncation at 256, padding to the batch's longest text), run, mean-pool over the
        attention mask, Matryoshka 256 (layer_norm, first 256 values, L2) - what sutra does.
    python bench/ort_bench.py quality ONNX_F32 ONNX_INT8 MODEL_DIR GOLDEN_JSON
        how far the INT8 model's vectors are from the f32 model's on the golden texts:
        minimum and mean cosine (full and Matryoshka-256) and mean 5-nearest-neighbour overlap.
"""
import json
import sys
import time

import numpy as np

SHORT = "The storage server keeps every acknowledged write safe."
WORDS = "embedding vectors are stored in memory mapped segments and the log recovers".split()
MAX_TOKENS = 256


def text(length, slot):
    base = SHORT if length == "short" else " ".join(WORDS[i % len(WORDS)] for i in range(100))
    return f"{base} {slot}"


def export(model_dir, out_dir):
    import os

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    os.makedirs(out_dir, exist_ok=True)
    class Encoder(torch.nn.Module):
        """The folder's BERT with its inputs by name (positional order differs by version)."""

        def __init__(self):
            super().__init__()
            self.bert = AutoModel.from_pretrained(model_dir).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.int64)
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "sequence"} for name in names + ["last_hidden_state"]}
    f32 = os.path.join(out_dir, "model.onnx")
    with torch.inference_mode():
        torch.onnx.export(Encoder().eval(), args, f32, input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    quantize_dynamic(f32, os.path.join(out_dir, "model-int8.onnx"), weight_type=QuantType.QInt8)
    print(f"wrote {f32} and model-int8.onnx", file=sys.stderr)


class Embedder:
    def __init__(self, onnx_file, model_dir, threads):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_file, options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding()  # to the longest text of the batch

    def pooled(self, texts):
        encodings = self.tokenizer.encode_batch(texts)
        feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        feed = {name: value for name, value in feed.items() if name in self.inputs}
        (states,) = self.session.run(["last_hidden_state"], feed)
        mask = feed["attention_mask"][..., None].astype(np.float32)
        return (states * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)

    def embed(self, texts, dim=256):
        return matryoshka(self.pooled(texts), dim)


def l2(vectors):
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def matryoshka(pooled, dim):
    mean = pooled.mean(axis=1, keepdims=True)
    var = pooled.var(axis=1, keepdims=True)
    return l2(((pooled - mean) / np.sqrt(var + 1e-5))[:, :dim])


def bench(onnx_file, model_dir, threads, seconds, sizes):
    embedder = Embedder(onnx_file, model_dir, threads)
    for length in ("short", "medium"):
        for batch in sizes:
            texts = [text(length, slot) for slot in range(batch)]
            embedder.embed(texts)  # warm-up
            runs, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                embedder.embed(texts)
                runs += 1
            per_second = runs * batch / (time.perf_counter() - started)
            print(json.dumps({"length": length, "batch": batch, "per_second": per_second,
                              "threads": threads}), flush=True)


def knn_overlap(a, b, k=5):
    """Mean share of each text's k nearest neighbours (cosine) that both sets agree on."""
    def neighbours(vectors):
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1)[:, :k]
    na, nb = neighbours(a), neighbours(b)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)]))


def quality(f32_file, int8_file, model_dir, golden):
    texts = [item["text"] for item in json.load(open(golden, encoding="utf-8"))["items"]]
    reference = Embedder(f32_file, model_dir, 2).pooled(texts)
    quantised = Embedder(int8_file, model_dir, 2).pooled(texts)
    report = {"texts": len(texts)}
    for name, finish in (("full", l2), ("mrl256", lambda v: matryoshka(v, 256))):
        a, b = finish(reference), finish(quantised)
        cosine = (a * b).sum(axis=1)
        report[name] = {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean()),
                        "knn5_overlap": knn_overlap(a, b)}
    print(json.dumps(report))


def main():
    command = sys.argv[1]
    if command == "export":
        export(sys.argv[2], sys.argv[3])
    elif command == "bench":
        sizes = [int(s) for s in (sys.argv[6] if len(sys.argv) > 6 else "1,8,32,64").split(",")]
        bench(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sizes)
    elif command == "quality":
        quality(*sys.argv[2:6])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
