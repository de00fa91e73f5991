"""One side of python/bench/compare-redis-py.sh: the Python client of sutra-storage or redis-py
(with hiredis) against Redis, one connection, 1.2 KB values, four cases:

- ``set``: one store per call (sutra: ``store_concept`` of 176 bytes of content and a 256-dim
  float32 vector, 1,200 bytes of payload; Redis: ``SET`` of 1,200 bytes);
- ``get``: one read per call;
- ``concurrent``: reads kept in flight together (sutra: ``asyncio.gather`` of 100
  ``AsyncStorageClient.get_concept_by_id`` calls at a time; Redis: a pipeline of 100 ``GET``);
- ``gather``: the same ``asyncio.gather`` of 100 reads on both sides (Redis: redis-py's own
  asyncio client, ``redis.asyncio``);
- ``async_pipeline``: 100 reads from asyncio in one ``await`` (sutra: ``AsyncPipeline``;
  Redis: the blocking pipeline of 100 ``GET`` above, as the issue's anchor);
- ``pipeline``: 100 reads per ``execute()`` (sutra: ``StorageClient.pipeline()``; Redis: the
  same pipeline of 100 ``GET`` as above);
- ``many``: 100 keys per call (sutra: ``get_many``; Redis: ``MGET``), reported in keys/s.

Prints one JSON object: operations (or keys) per second for each case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Callable, Dict, List

KEYS = 10_000
BATCH = 100
CONTENT = "x" * 176
VALUE = b"v" * 1200


def rate(count: int, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def each(count: int, call: Callable[[int], object]) -> Callable[[], None]:
    """``call(0..count)``, answers dropped as they come (as redis-benchmark does): a list
    that kept them all would measure the garbage collector walking thousands of objects."""

    def run() -> None:
        for i in range(count):
            call(i)

    return run


def sutra_side(port: int, seconds: float) -> Dict[str, float]:
    from sutra_storage_client_tcp import AsyncStorageClient, StorageClient

    client = StorageClient(port=port)
    vector = [random.random() for _ in range(256)]
    keys = [f"key:{i:06}" for i in range(KEYS)]
    n = max(1000, int(seconds * 3000))
    results: Dict[str, float] = {}

    def sets() -> None:
        for i in range(n):
            client.store_concept(keys[i % KEYS], CONTENT, vector)

    results["set"] = rate(n, sets)
    for key in keys:  # every key present for the reads
        client.store_concept(key, CONTENT, vector)
    results["get"] = rate(n, each(n, lambda i: client.get_concept_by_id(keys[i % KEYS])))

    async def concurrent(total: int) -> None:
        async with AsyncStorageClient(port=port) as aclient:
            for start in range(0, total, BATCH):
                await asyncio.gather(*(aclient.get_concept_by_id(keys[(start + j) % KEYS])
                                       for j in range(BATCH)))

    m = n * 4
    results["concurrent"] = rate(m, lambda: asyncio.run(concurrent(m)))
    results["gather"] = results["concurrent"]

    async def async_pipelined(total: int) -> None:
        async with AsyncStorageClient(port=port) as aclient:
            for start in range(0, total, BATCH):
                pipe = aclient.pipeline()
                for j in range(BATCH):
                    pipe.get_concept_by_id(keys[(start + j) % KEYS])
                await pipe.execute()

    results["async_pipeline"] = rate(m, lambda: asyncio.run(async_pipelined(m)))

    def pipelined(total: int) -> None:
        for start in range(0, total, BATCH):
            pipe = client.pipeline()
            for j in range(BATCH):
                pipe.get_concept_by_id(keys[(start + j) % KEYS])
            pipe.execute()

    results["pipeline"] = rate(m, lambda: pipelined(m))
    calls = max(50, n // 20)
    results["many"] = rate(
        calls * BATCH,
        each(calls, lambda i: client.get_many(keys[(i * BATCH) % KEYS:(i * BATCH) % KEYS + BATCH])),
    )
    return results


def redis_side(port: int, seconds: float) -> Dict[str, float]:
    import redis

    client = redis.Redis(port=port)
    keys: List[str] = [f"key:{i:06}" for i in range(KEYS)]
    n = max(1000, int(seconds * 3000))
    results: Dict[str, float] = {}
    results["set"] = rate(n, each(n, lambda i: client.set(keys[i % KEYS], VALUE)))
    for start in range(0, KEYS, 1000):
        client.mset({key: VALUE for key in keys[start:start + 1000]})
    results["get"] = rate(n, each(n, lambda i: client.get(keys[i % KEYS])))

    def pipelined(total: int) -> None:
        for start in range(0, total, BATCH):
            pipe = client.pipeline(transaction=False)
            for j in range(BATCH):
                pipe.get(keys[(start + j) % KEYS])
            pipe.execute()

    m = n * 4
    results["concurrent"] = rate(m, lambda: pipelined(m))
    results["pipeline"] = results["concurrent"]
    results["async_pipeline"] = results["concurrent"]

    async def gathered(total: int) -> None:
        import redis.asyncio

        aclient = redis.asyncio.Redis(port=port)
        for start in range(0, total, BATCH):
            await asyncio.gather(*(aclient.get(keys[(start + j) % KEYS]) for j in range(BATCH)))
        await aclient.aclose()

    results["gather"] = rate(m, lambda: asyncio.run(gathered(m)))
    calls = max(50, n // 20)
    results["many"] = rate(
        calls * BATCH,
        each(calls, lambda i: client.mget(keys[(i * BATCH) % KEYS:(i * BATCH) % KEYS + BATCH])),
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=["sutra", "redis"])
    parser.add_argument("port", type=int)
    parser.add_argument("--seconds", type=float, default=2.0, help="rough length of each case")
    args = parser.parse_args()
    side = sutra_side if args.side == "sutra" else redis_side
    print(json.dumps(side(args.port, args.seconds)))


if __name__ == "__main__":
    main()
