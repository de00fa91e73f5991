"""The anchors of bench/compare-ann.sh: hnswlib and faiss (IndexHNSWFlat) on the same vectors
as sutra-ann-bench, measured the same way: build time, then queries/s and recall@k at each
search breadth, one query per call on one thread, and batches on THREADS threads.

    python ann_bench.py data BASE QUERIES N Q DIM CLUSTERS SPREAD   (writes the two files)
    python ann_bench.py hnswlib|faiss BASE QUERIES DIM M EF_CONSTRUCTION BUILD_THREADS EFS THREADS K SECONDS

Vectors are raw little-endian f32. Recall is against numpy's exact inner products (the
vectors are unit length, so inner product is cosine similarity). Prints one JSON object.
"""

import json
import os
import sys
import tempfile
import time

import numpy as np


def unit(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def make_data(base_path, queries_path, n, q, dim, clusters, spread):
    """Clustered unit vectors: a centre per cluster, Gaussian spread around it."""
    rng = np.random.default_rng(7)
    centres = unit(rng.standard_normal((clusters, dim), dtype=np.float32))

    def draw(count):
        picks = rng.integers(0, clusters, count)
        noise = rng.standard_normal((count, dim), dtype=np.float32) * spread
        return unit(centres[picks] + noise).astype("<f4")

    draw(n).tofile(base_path)
    draw(q).tofile(queries_path)


def exact_truth(base, queries, k):
    truth = []
    for start in range(0, len(queries), 256):
        scores = queries[start:start + 256] @ base.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        truth.extend(set(row) for row in top)
    return truth


def recall(found, truth):
    hits = sum(len(set(row) & t) for row, t in zip(found, truth))
    return hits / sum(len(t) for t in truth)


def measure(search_one, search_batch, queries, seconds):
    """(queries/s one at a time, queries/s in batches)."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        search_one(queries[done % len(queries)])
        done += 1
    single = done / (time.perf_counter() - started)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        search_batch(queries)
        done += len(queries)
    batched = done / (time.perf_counter() - started)
    return single, batched


def main():
    if sys.argv[1] == "data":
        base, queries, n, q, dim, clusters, spread = sys.argv[2:9]
        make_data(base, queries, int(n), int(q), int(dim), int(clusters), float(spread))
        return
    side = sys.argv[1]
    base_path, queries_path = sys.argv[2], sys.argv[3]
    dim, m, efc, build_threads = (int(v) for v in sys.argv[4:8])
    efs = [int(v) for v in sys.argv[8].split(",")]
    threads, k, seconds = int(sys.argv[9]), int(sys.argv[10]), float(sys.argv[11])
    base = np.fromfile(base_path, dtype="<f4").reshape(-1, dim)
    queries = np.fromfile(queries_path, dtype="<f4").reshape(-1, dim)
    truth = exact_truth(base, queries, k)
    cases = []
    if side == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=len(base), M=m, ef_construction=efc, random_seed=1)
        started = time.perf_counter()
        index.add_items(base, np.arange(len(base)), num_threads=build_threads)
        build = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "index")
            index.save_index(path)
            memory = os.path.getsize(path)
        for ef in efs:
            index.set_ef(ef)
            labels, _ = index.knn_query(queries, k=k, num_threads=threads)
            single, batched = measure(
                lambda query: index.knn_query(query, k=k, num_threads=1),
                lambda batch: index.knn_query(batch, k=k, num_threads=threads),
                queries,
                seconds,
            )
            cases.append({"ef": ef, "recall": recall(labels, truth), "qps_1": single, "qps_n": batched})
    elif side == "faiss":
        import faiss

        faiss.omp_set_num_threads(build_threads)
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = efc
        started = time.perf_counter()
        index.add(base)
        build = time.perf_counter() - started
        memory = faiss.serialize_index(index).nbytes
        for ef in efs:
            index.hnsw.efSearch = ef
            faiss.omp_set_num_threads(threads)
            _, labels = index.search(queries, k)

            def one(query):
                faiss.omp_set_num_threads(1)
                index.search(query.reshape(1, -1), k)

            def batch(rows):
                faiss.omp_set_num_threads(threads)
                index.search(rows, k)

            single, batched = measure(one, batch, queries, seconds)
            cases.append({"ef": ef, "recall": recall(labels, truth), "qps_1": single, "qps_n": batched})
    else:
        raise SystemExit(f"unknown side {side}")
    print(json.dumps({
        "side": side,
        "vectors": len(base),
        "build_s": build,
        "bytes_per_vector": memory // len(base),
        "cases": cases,
    }))


if __name__ == "__main__":
    main()
