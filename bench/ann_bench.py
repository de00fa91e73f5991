"""The anchors of bench/compare-ann.sh: hnswlib and faiss (IndexHNSWFlat) on the same vectors
as sutra-ann-bench, measured the same way: build time, then queries/s and recall@k at each
search breadth, one query per call on one thread, and batches on THREADS threads.

    python ann_bench.py data BASE QUERIES N Q DIM CLUSTERS SPREAD   (writes the two files)
    python ann_bench.py paragraphs DIR N Q PARAGRAPHS.json QUESTIONS.json
    python ann_bench.py json2f32 VECTORS.json OUT.f32
    python ann_bench.py hnswlib|faiss BASE QUERIES DIM M EF_CONSTRUCTION BUILD_THREADS EFS THREADS K SECONDS
    python ann_bench.py report RESULTS.jsonl THREADS DATA VECTORS
    python ann_bench.py http-recall PORT QUERIES COUNT EF   (a running sutra-storage's index
        against its exact search, over HTTP: recall@10 of the first COUNT queries)
    python ann_bench.py http-latency PORT QUERIES          (milliseconds of one search)

Vectors are raw little-endian f32. Recall is against numpy's exact inner products (the
vectors are unit length, so inner product is cosine similarity). Prints one JSON object.
"""

import gzip
import json
import os
import re
import statistics
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


def paragraphs(root, n, q, out_paragraphs, out_questions):
    """Paragraphs of 200-1500 characters from the text files under `root` (gzip too), unique,
    in a fixed order; the questions are the first sentences of an evenly spaced Q of them."""
    seen, found = set(), []
    for directory, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(directory, name)
            try:
                opener = gzip.open if name.endswith(".gz") else open
                with opener(path, "rt", encoding="utf-8", errors="strict") as file:
                    text = file.read(2_000_000)
            except (OSError, UnicodeDecodeError, EOFError):
                continue
            for block in re.split(r"\n\s*\n", text):
                block = " ".join(block.split())
                if 200 <= len(block) <= 1500 and sum(c.isalpha() for c in block) > len(block) // 2:
                    if block not in seen:
                        seen.add(block)
                        found.append(block)
                        if len(found) >= n:
                            break
            if len(found) >= n:
                break
        if len(found) >= n:
            break
    step = max(1, len(found) // q)
    questions = [re.split(r"(?<=[.!?])\s", found[i])[0][:300] for i in range(0, len(found), step)][:q]
    with open(out_paragraphs, "w") as file:
        json.dump(found, file)
    with open(out_questions, "w") as file:
        json.dump(questions, file)
    print(f"{len(found)} paragraphs, {len(questions)} questions", file=sys.stderr)


def json2f32(source, target):
    with open(source) as file:
        np.asarray(json.load(file), dtype="<f4").tofile(target)


def report(path, threads, data, vectors):
    """Medians over rounds per side and ef; ratios of sutra to each anchor."""
    runs = [json.loads(line) for line in open(path) if line.strip()]
    sides = {}
    for run in runs:
        sides.setdefault(run["side"], []).append(run)
    med = statistics.median

    def cases(side, filter_name="none"):
        table = {}
        for run in sides.get(side, []):
            for case in run["cases"]:
                if case.get("filter", "none") != filter_name:
                    continue
                entry = table.setdefault(case["ef"], {"recall": [], "qps_1": [], "qps_n": [], "scanned": False})
                entry["recall"].append(case["recall"])
                if side == "sutra":
                    entry["qps_1" if case["threads"] == 1 else "qps_n"].append(case["qps"])
                    entry["scanned"] |= case.get("scanned", False)
                else:
                    entry["qps_1"].append(case["qps_1"])
                    entry["qps_n"].append(case["qps_n"])
        return {ef: {key: (med(v) if isinstance(v, list) else v) for key, v in e.items()} for ef, e in table.items()}

    print(f"## {data} data, {vectors} vectors, {len(sides.get('sutra', []))} rounds\n")
    print("| side | build s | bytes/vector |")
    print("|---|---:|---:|")
    for side, side_runs in sides.items():
        print(f"| {side} | {med(r['build_s'] for r in side_runs):.1f} | {med(r['bytes_per_vector'] for r in side_runs):.0f} |")
    print()
    ours = cases("sutra")
    anchors = [side for side in sides if side not in ("sutra", "tcp")]
    header = "| ef | sutra recall@10 | sutra q/s 1 thread | sutra q/s " + str(threads) + " threads |"
    rule = "|---:|---:|---:|---:|"
    for side in anchors:
        header += f" {side} recall | {side} q/s 1 | {side} q/s {threads} | ratio 1 | ratio {threads} |"
        rule += "---:|---:|---:|---:|---:|"
    print(header)
    print(rule)
    theirs = {side: cases(side) for side in anchors}
    for ef in sorted(ours):
        row = f"| {ef} | {ours[ef]['recall']:.4f} | {ours[ef]['qps_1']:.0f} | {ours[ef]['qps_n']:.0f} |"
        for side in anchors:
            other = theirs[side].get(ef)
            if other is None:
                row += " | | | | |"
                continue
            row += (f" {other['recall']:.4f} | {other['qps_1']:.0f} | {other['qps_n']:.0f} |"
                    f" {ours[ef]['qps_1'] / other['qps_1']:.2f}x | {ours[ef]['qps_n'] / other['qps_n']:.2f}x |")
        print(row)
    # The same recall: sutra's queries/s interpolated (linearly in recall) between the two of
    # its search breadths whose recalls bracket the anchor's.
    curve = sorted((e["recall"], e["qps_1"], e["qps_n"]) for e in ours.values())

    def at_recall(recall, column):
        for (r0, *q0), (r1, *q1) in zip(curve, curve[1:]):
            if r0 <= recall <= r1:
                t = 0.0 if r1 == r0 else (recall - r0) / (r1 - r0)
                return q0[column] + t * (q1[column] - q0[column])
        return None

    for side in anchors:
        print(f"\nAt {side}'s recall (sutra's queries/s interpolated between its two nearest ef):\n")
        print(f"| {side} ef | recall@10 | {side} q/s 1 | sutra q/s 1 | ratio | {side} q/s {threads} | sutra q/s {threads} | ratio |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for ef, other in sorted(theirs[side].items()):
            one, many = at_recall(other["recall"], 0), at_recall(other["recall"], 1)
            if one is None:
                continue
            print(f"| {ef} | {other['recall']:.4f} | {other['qps_1']:.0f} | {one:.0f} | {one / other['qps_1']:.2f}x |"
                  f" {other['qps_n']:.0f} | {many:.0f} | {many / other['qps_n']:.2f}x |")
    if "tcp" in sides:
        tcp = {}
        for run in sides["tcp"]:
            for case in run["cases"]:
                entry = tcp.setdefault((case["ef"], case["threads"]), {"qps": [], "p50": [], "p99": [], "errors": 0})
                entry["qps"].append(case["tcp"]["qps"])
                entry["p50"].append(case["tcp"]["p50_ms"])
                entry["p99"].append(case["tcp"]["p99_ms"])
                entry["errors"] += case["tcp"]["errors"]
        print("\nOver TCP (sutra-storage, sutra-bench -t search -P 1 with 1 and " + str(threads)
              + " connections; 'kept' = TCP queries/s / in-process queries/s at the same ef):\n")
        print("| ef | connections | q/s | p50 ms | p99 ms | in process q/s | kept | errors |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for (ef, clients), entry in sorted(tcp.items()):
            inside = ours.get(ef, {}).get("qps_1" if clients == 1 else "qps_n")
            qps = med(entry["qps"])
            kept = f"{qps / inside:.2f}x" if inside else ""
            inside_text = f"{inside:.0f}" if inside else ""
            print(f"| {ef} | {clients} | {qps:.0f} | {med(entry['p50']):.3f} | {med(entry['p99']):.3f} |"
                  f" {inside_text} | {kept} | {entry['errors']} |")
    rare = cases("sutra", "rare")
    if rare:
        print("\nsutra, filtered to a type holding 1% of the vectors (the engine picks the graph or a scan of the type):\n")
        print(f"| ef | recall@10 | q/s 1 thread | q/s {threads} threads | answered by |")
        print("|---:|---:|---:|---:|---|")
        for ef in sorted(rare):
            how = "scan of the type" if rare[ef]["scanned"] else "filtered graph"
            print(f"| {ef} | {rare[ef]['recall']:.4f} | {rare[ef]['qps_1']:.0f} | {rare[ef]['qps_n']:.0f} | {how} |")


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


def http_search(port, vector, exact=False, ef=0):
    """The ids sutra-storage's `POST /api/search` answers for `vector` (top 10)."""
    import urllib.request
    body = {"vector": [float(v) for v in vector], "k": 10, "exact": exact}
    if ef:
        body["ef"] = ef
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/search",
                                     json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as reply:
        return [hit["id"] for hit in json.load(reply)["results"]]


def http_recall(port, queries_path, count, ef):
    rows = np.fromfile(queries_path, dtype="<f4").reshape(-1, 256)[:count]
    truth = [set(http_search(port, row, exact=True)) for row in rows]
    found = [http_search(port, row, ef=ef) for row in rows]
    return recall(found, truth)


def main():
    if sys.argv[1] == "http-recall":
        print(f"{http_recall(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])):.3f}")
        return
    if sys.argv[1] == "http-latency":
        row = np.fromfile(sys.argv[3], dtype="<f4", count=256)
        started = time.perf_counter()
        http_search(sys.argv[2], row)
        print(f"{(time.perf_counter() - started) * 1000:.0f}")
        return
    if sys.argv[1] == "data":
        base, queries, n, q, dim, clusters, spread = sys.argv[2:9]
        make_data(base, queries, int(n), int(q), int(dim), int(clusters), float(spread))
        return
    if sys.argv[1] == "paragraphs":
        root, n, q, out_paragraphs, out_questions = sys.argv[2:7]
        paragraphs(root, int(n), int(q), out_paragraphs, out_questions)
        return
    if sys.argv[1] == "json2f32":
        json2f32(sys.argv[2], sys.argv[3])
        return
    if sys.argv[1] == "report":
        report(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
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
