"""One side of python/bench/compare-redis-py.sh: the Python client of sutra-storage or redis-py
(with hiredis) against Redis, one connection, 1.2 KB values, each case run for `--seconds`:

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
from typing import Awaitable, Callable, Dict, List

KEYS = 10_000
BATCH = 100
CONTENT = "x" * 176
VALUE = b"v" * 1200


def timed(seconds: float, unit: int, step: Callable[[int], object]) -> float:
    """Operations per second of ``step(0), step(1), ...`` (each doing ``unit`` operations)
    run for ``seconds``; answers are dropped as they come (as redis-benchmark does): a list
    that kept them all would measure the garbage collector walking thousands of objects."""
    started = time.perf_counter()
    deadline = started + seconds
    steps = 0
    while True:
        step(steps)
        steps += 1
        now = time.perf_counter()
        if now >= deadline:
            return steps * unit / (now - started)


async def timed_async(seconds: float, unit: int, step: Callable[[int], Awaitable[object]]) -> float:
    """:func:`timed` for a coroutine step, on the running event loop."""
    started = time.perf_counter()
    deadline = started + seconds
    steps = 0
    while True:
        await step(steps)
        steps += 1
        now = time.perf_counter()
        if now >= deadline:
            return steps * unit / (now - started)


def batch_keys(keys: List[str], step: int) -> List[str]:
    """The ``BATCH`` keys of batch number ``step``, cycling through ``keys``."""
    start = (step * BATCH) % len(keys)
    return keys[start:start + BATCH]


def sutra_side(port: int, seconds: float) -> Dict[str, float]:
    from sutra_storage_client_tcp import AsyncStorageClient, StorageClient

    client = StorageClient(port=port)
    vector = [random.random() for _ in range(256)]
    keys = [f"key:{i:06}" for i in range(KEYS)]
    results: Dict[str, float] = {}
    results["set"] = timed(seconds, 1,
                           lambda i: client.store_concept(keys[i % KEYS], CONTENT, vector))
    for key in keys:  # every key present for the reads
        client.store_concept(key, CONTENT, vector)
    results["get"] = timed(seconds, 1, lambda i: client.get_concept_by_id(keys[i % KEYS]))

    async def concurrent() -> float:
        async with AsyncStorageClient(port=port) as aclient:
            return await timed_async(seconds, BATCH, lambda i: asyncio.gather(
                *(aclient.get_concept_by_id(key) for key in batch_keys(keys, i))))

    results["concurrent"] = asyncio.run(concurrent())
    results["gather"] = results["concurrent"]

    async def async_pipelined() -> float:
        async with AsyncStorageClient(port=port) as aclient:
            def step(i: int) -> Awaitable[object]:
                pipe = aclient.pipeline()
                for key in batch_keys(keys, i):
                    pipe.get_concept_by_id(key)
                return pipe.execute()

            return await timed_async(seconds, BATCH, step)

    results["async_pipeline"] = asyncio.run(async_pipelined())

    def pipelined(i: int) -> None:
        pipe = client.pipeline()
        for key in batch_keys(keys, i):
            pipe.get_concept_by_id(key)
        pipe.execute()

    results["pipeline"] = timed(seconds, BATCH, pipelined)
    results["many"] = timed(seconds, BATCH, lambda i: client.get_many(batch_keys(keys, i)))
    return results


def redis_side(port: int, seconds: float) -> Dict[str, float]:
    import redis

    client = redis.Redis(port=port)
    keys: List[str] = [f"key:{i:06}" for i in range(KEYS)]
    results: Dict[str, float] = {}
    results["set"] = timed(seconds, 1, lambda i: client.set(keys[i % KEYS], VALUE))
    for start in range(0, KEYS, 1000):
        client.mset({key: VALUE for key in keys[start:start + 1000]})
    results["get"] = timed(seconds, 1, lambda i: client.get(keys[i % KEYS]))

    def pipelined(i: int) -> None:
        pipe = client.pipeline(transaction=False)
        for key in batch_keys(keys, i):
            pipe.get(key)
        pipe.execute()

    results["concurrent"] = timed(seconds, BATCH, pipelined)
    results["pipeline"] = results["concurrent"]
    results["async_pipeline"] = results["concurrent"]

    async def gathered() -> float:
        import redis.asyncio

        aclient = redis.asyncio.Redis(port=port)
        try:
            return await timed_async(seconds, BATCH, lambda i: asyncio.gather(
                *(aclient.get(key) for key in batch_keys(keys, i))))
        finally:
            await aclient.aclose()

    results["gather"] = asyncio.run(gathered())
    results["many"] = timed(seconds, BATCH, lambda i: client.mget(batch_keys(keys, i)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=["sutra", "redis"])
    parser.add_argument("port", type=int)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each case")
    args = parser.parse_args()
    side = sutra_side if args.side == "sutra" else redis_side
    print(json.dumps(side(args.port, args.seconds)))


if __name__ == "__main__":
    main()
