"""sentence-transformers on PyTorch, the same cases as sutra-embed-bench, for
bench/compare-sentence-transformers.sh: embeddings per second for each batch size on short
and medium texts, built exactly as the Rust bench builds them, one JSON object per case.

    python bench/st_bench.py MODEL_DIR THREADS SECONDS [BATCH_SIZES]
"""
import json
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

SHORT = "The storage server keeps every acknowledged write safe."
WORDS = "embedding vectors are stored in memory mapped segments and the log recovers".split()


def text(length, slot):
    base = SHORT if length == "short" else " ".join(WORDS[i % len(WORDS)] for i in range(100))
    return f"{base} {slot}"


def main():
    model_dir, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sizes = [int(s) for s in (sys.argv[4] if len(sys.argv) > 4 else "1,8,32,64").split(",")]
    torch.set_num_threads(threads)
    model = SentenceTransformer(model_dir, device="cpu")
    for length in ("short", "medium"):
        for batch in sizes:
            texts = [text(length, slot) for slot in range(batch)]
            model.encode(texts, batch_size=batch)  # warm-up
            runs, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                model.encode(texts, batch_size=batch)
                runs += 1
            per_second = runs * batch / (time.perf_counter() - started)
            print(json.dumps({"length": length, "batch": batch, "per_second": per_second,
                              "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
