"""Diagnostics of the Python client beside python/bench/compare-redis-py.sh, against servers
already running (by hand only; the numbers in bench/RESULTS.md that are not from
compare-redis-py.sh come from here):

- ``ab SUTRA_PORT REDIS_PORT [ROUNDS]``: the two servers filled once, then alternating rounds
  in one process of redis-py's pipeline of 100 GET, an ``asyncio.gather`` of 100
  ``get_concept_by_id`` and an ``AsyncPipeline`` of 100 (20,000 reads each); medians.
- ``hop SUTRA_PORT``: microseconds per batch of 1 and of 100 reads, blocking ``pipeline()``
  against ``AsyncPipeline`` (what the hop between the event loop and the socket costs).
- ``many SUTRA_PORT SERVER_PID``: ``get_many(100)`` keys/s with the client's and the server's
  CPU per call (the server's from ``/proc/SERVER_PID/stat``).

Start the servers as compare-redis-py.sh does, e.g.::

    STORAGE_PATH=$(mktemp -d) VECTOR_INDEX=none target/release/sutra-storage --port 16380 \\
        --fsync everysec &
    redis-server --port 16379 --save "" --appendonly yes --appendfsync everysec &
    python/bench/.venv/bin/python python/bench/steady.py ab 16380 16379 10
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

from sutra_storage_client_tcp import AsyncStorageClient, StorageClient

KEYS = [f"key:{i:06}" for i in range(10_000)]
BATCH = 100
READS = 20_000


def fill(port: int) -> StorageClient:
    client = StorageClient(port=port)
    vector = [0.1] * 256
    for key in KEYS:
        client.store_concept(key, "x" * 176, vector)
    return client


def batch(step: int) -> List[str]:
    start = (step * BATCH) % len(KEYS)
    return KEYS[start:start + BATCH]


def ab(sutra_port: int, redis_port: int, rounds: int) -> None:
    import redis

    fill(sutra_port)
    rclient = redis.Redis(port=redis_port)
    for start in range(0, len(KEYS), 1000):
        rclient.mset({key: b"v" * 1200 for key in KEYS[start:start + 1000]})

    def redis_pipeline() -> float:
        started = time.perf_counter()
        for step in range(READS // BATCH):
            pipe = rclient.pipeline(transaction=False)
            for key in batch(step):
                pipe.get(key)
            pipe.execute()
        return READS / (time.perf_counter() - started)

    async def main() -> None:
        aclient = AsyncStorageClient(port=sutra_port)

        async def gather() -> float:
            started = time.perf_counter()
            for step in range(READS // BATCH):
                await asyncio.gather(*(aclient.get_concept_by_id(key) for key in batch(step)))
            return READS / (time.perf_counter() - started)

        async def async_pipeline() -> float:
            started = time.perf_counter()
            for step in range(READS // BATCH):
                pipe = aclient.pipeline()
                for key in batch(step):
                    pipe.get_concept_by_id(key)
                await pipe.execute()
            return READS / (time.perf_counter() - started)

        rates: Dict[str, List[float]] = {"redis-py pipeline": [], "gather": [],
                                         "AsyncPipeline": []}
        for _ in range(rounds):
            rates["redis-py pipeline"].append(redis_pipeline())
            rates["gather"].append(await gather())
            rates["AsyncPipeline"].append(await async_pipeline())
        for name, values in rates.items():
            print(f"{name}: median {statistics.median(values):,.0f} reads/s "
                  f"({', '.join(f'{value / 1000:.0f}k' for value in values)})")
        ratio = statistics.median(rates["gather"]) / statistics.median(rates["redis-py pipeline"])
        print(f"gather / redis-py pipeline: {ratio:.2f}x")
        await aclient.close()

    asyncio.run(main())


def hop(port: int) -> None:
    client = fill(port)

    def blocking(size: int, count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            pipe = client.pipeline()
            for key in KEYS[:size]:
                pipe.get_concept_by_id(key)
            pipe.execute()
        return (time.perf_counter() - started) / count * 1e6

    async def from_asyncio(size: int, count: int) -> float:
        aclient = AsyncStorageClient(port=port)
        await aclient.health_check()
        started = time.perf_counter()
        for _ in range(count):
            pipe = aclient.pipeline()
            for key in KEYS[:size]:
                pipe.get_concept_by_id(key)
            await pipe.execute()
        elapsed = (time.perf_counter() - started) / count * 1e6
        await aclient.close()
        return elapsed

    for size in (1, BATCH):
        for _ in range(2):
            print(f"batch of {size}: blocking {blocking(size, 2000):.0f} µs, "
                  f"asyncio {asyncio.run(from_asyncio(size, 2000)):.0f} µs")


def many(port: int, server_pid: int, calls: int = 3000) -> None:
    client = fill(port)
    tick = os.sysconf("SC_CLK_TCK")

    def server_cpu() -> float:
        with open(f"/proc/{server_pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    for _ in range(3):
        server_before, client_before = server_cpu(), time.process_time()
        started = time.perf_counter()
        for step in range(calls):
            client.get_many(batch(step))
        wall = time.perf_counter() - started
        client_cpu = time.process_time() - client_before
        server = server_cpu() - server_before
        print(f"{calls * BATCH / wall:,.0f} keys/s; per call: wall {wall / calls * 1e6:.0f} µs, "
              f"client CPU {client_cpu / calls * 1e6:.0f} µs, "
              f"server CPU {server / calls * 1e6:.0f} µs")


def main() -> None:
    commands: Dict[str, Callable[[List[str]], None]] = {
        "ab": lambda args: ab(int(args[0]), int(args[1]), int(args[2]) if len(args) > 2 else 10),
        "hop": lambda args: hop(int(args[0])),
        "many": lambda args: many(int(args[0]), int(args[1])),
    }
    if len(sys.argv) < 3 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
