"""Learn throughput of a running sutra-storage: LearnConcept calls from the Python client,
``--in-flight`` at a time over one connection (the server's batcher merges them into model
runs), every text new. Prints learns per second."""

from __future__ import annotations

import argparse
import asyncio
import time

from sutra_storage_client_tcp import AsyncStorageClient

WORDS = ("semantic memory stores every acknowledged concept with its vector so that "
         "retrieval augmented generation finds the nearest passages quickly").split()


def text(index: int, words: int) -> str:
    body = " ".join(WORDS[(index + i) % len(WORDS)] for i in range(words))
    return f"{index}: {body}"


async def run(port: int, count: int, in_flight: int, words: int, tag: str) -> float:
    async with AsyncStorageClient(port=port, timeout=120) as client:
        await client.learn_concept(text(-1, words))  # warm-up
        started = time.perf_counter()
        for start in range(0, count, in_flight):
            await asyncio.gather(*(client.learn_concept(f"{tag} {text(start + i, words)}")
                                   for i in range(min(in_flight, count - start))))
        return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--words", type=int, default=8, help="8: about 12 tokens; 100: about 129")
    parser.add_argument("--tag", default=str(time.time()))
    args = parser.parse_args()
    print(f"{asyncio.run(run(args.port, args.count, args.in_flight, args.words, args.tag)):.1f}")


if __name__ == "__main__":
    main()
