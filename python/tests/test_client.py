"""The Python client against real sutra-storage processes (see conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, List, Optional

import numpy as np
import pytest

import sutra_storage_client_tcp as sutra
from sutra_storage_client_tcp import (
    AsyncStorageClient,
    ConceptMetadata,
    StorageClient,
)

DIM = 256


def vector(seed: int) -> List[float]:
    """256 values exactly representable in float32."""
    return [((seed * 31 + i) % 64) / 8.0 - 4.0 for i in range(DIM)]


def client_for(server, **options) -> StorageClient:
    return StorageClient(host=server.host, port=server.port, **options)


def test_the_seeds_store_and_get(server) -> None:
    client = client_for(server)
    health = client.health_check()
    assert health["status"] == "ok" and health["model"] is None  # no model: no learning
    metadata = ConceptMetadata(
        concept_type="embedding_cache",
        created_at=datetime.now().isoformat(),
        expires_at=(datetime.now() + timedelta(seconds=86400)).isoformat(),
        model="all-MiniLM-L6-v2",
    )
    outcome = client.store_concept(
        concept_id="emb:all-MiniLM-L6-v2:0123456789abcdef",
        content="a cat sat on the mat"[:200],
        embedding=vector(1),
        metadata=metadata,
    )
    assert outcome["created"] is True
    concept = client.get_concept_by_id("emb:all-MiniLM-L6-v2:0123456789abcdef")
    assert concept and concept.embedding
    assert concept.embedding == vector(1)
    assert concept.content == "a cat sat on the mat"
    assert concept.concept_type == "embedding_cache"
    assert concept.model == "all-MiniLM-L6-v2"
    # expires_at became a one-day TTL, counted from the call.
    lifetime = concept.expires_at_ms - concept.created_at_ms
    assert abs(lifetime - 86_400_000) < 5_000, lifetime
    assert datetime.fromisoformat(concept.expires_at) > datetime.now(timezone.utc)
    assert datetime.fromisoformat(concept.created_at) <= datetime.now(timezone.utc)
    assert client.get_concept_by_id("absent") is None


def test_every_other_method(server) -> None:
    client = client_for(server)
    for index in range(25):
        client.store_concept(
            concept_id=f"doc-{index:02}",
            content=f"text {index}",
            embedding=vector(index) if index % 2 else None,
            metadata=ConceptMetadata(concept_type="note", attributes={"n": str(index)}),
        )
    listed = client.query_by_type("note")
    assert [c.id for c in listed] == [f"doc-{i:02}" for i in range(25)]
    assert [c.id for c in client.query_by_type("note", limit=7)] == [f"doc-{i:02}" for i in range(7)]
    paged = list(client.iter_type("note", page_size=4))
    assert paged == listed
    assert client.query_by_type("no-such-type") == []
    assert listed[3].attributes == {"n": "3"}
    assert listed[2].embedding is None and listed[3].embedding == vector(3)

    many = client.get_many(["doc-01", "absent", "doc-02"])
    assert [c and c.id for c in many] == ["doc-01", None, "doc-02"]
    stored = client.store_many(
        [
            {"concept_id": "batch-a", "content": "a", "embedding": vector(7)},
            {"concept_id": "batch-b", "content": "b", "ttl_seconds": 60,
             "metadata": ConceptMetadata(concept_type="note")},
        ]
    )
    assert [item["created"] for item in stored] == [True, True]
    assert stored[1]["expires_at_ms"] is not None
    assert client.delete_concept("doc-00") is True
    assert client.delete_concept("doc-00") is False
    assert client.clear_type("note") == 25  # 24 left + batch-b
    stats = client.stats()
    assert stats["concepts"] == 1 and stats["vector_dimension"] == DIM
    assert client.get_concept_by_id("batch-a").embedding == vector(7)


def test_numpy_in_and_out_without_lists(server) -> None:
    client = client_for(server)
    array = np.arange(DIM, dtype=np.float32) / 7
    client.store_concept("np", "numpy", embedding=array)
    client.store_concept("np64", "float64 and ints are converted", embedding=np.arange(DIM))
    concept = client.get_concept_by_id("np")
    view = concept.embedding_array()
    assert view.dtype == np.dtype("<f4") and not view.flags.writeable
    assert np.array_equal(view, array)
    assert view.base is not None  # a view over the received bytes, not a copy
    assert client.get_concept_by_id("np64").embedding_array()[5] == 5.0


def test_concepts_read_as_python_would_convert_them(server) -> None:
    client = client_for(server)
    client.store_concept(
        "c1", "content", embedding=list(range(DIM)), ttl_seconds=3600,
        metadata=ConceptMetadata(concept_type="t", model="m", attributes={"a": "b"}),
    )
    concept = client.get_concept_by_id("c1")
    iso = lambda ms: datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(  # noqa: E731
        timespec="milliseconds")
    assert concept.created_at == iso(concept.created_at_ms)
    assert concept.expires_at == iso(concept.expires_at_ms)
    assert concept.embedding == [float(i) for i in range(DIM)]  # ints stored as floats
    assert concept.embedding is concept.embedding  # made once
    assert concept.dimension == DIM
    assert concept == client.get_concept_by_id("c1")
    assert client.get_many(["c1"])[0] == concept and client.query_by_type("t") == [concept]
    client.store_concept("c2", "content")
    other = client.get_concept_by_id("c2")
    assert concept != other and other.embedding is None and other.embedding_array() is None
    assert other.expires_at is None and other.dimension == 0
    metadata = concept.metadata
    assert (metadata.concept_type, metadata.model, metadata.attributes) == ("t", "m", {"a": "b"})
    assert repr(concept).startswith("Concept(id='c1', concept_type='t', model='m', dimension=")


def test_search_by_vector_sync_and_async(server) -> None:
    client = client_for(server)
    for index in range(12):
        client.store_concept(f"s-{index:02}", "text", embedding=vector(index),
                             metadata=ConceptMetadata(concept_type="even" if index % 2 == 0 else "odd"))
    hits = client.search(vector=vector(4), k=3)
    assert hits[0]["id"] == "s-04" and abs(hits[0]["score"] - 1.0) < 1e-5
    assert hits[0]["concept"] is None and len(hits) == 3
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    odd = client.search(vector=np.array(vector(4), dtype=np.float32), k=20, concept_type="odd",
                        include_concepts=True)
    assert len(odd) == 6 and all(h["concept"].concept_type == "odd" for h in odd)

    async def from_asyncio() -> List[str]:
        aclient = AsyncStorageClient(host=server.host, port=server.port)
        found = await aclient.search(vector=vector(7), k=1)
        return [h["id"] for h in found]

    assert asyncio.run(from_asyncio()) == ["s-07"]
    with pytest.raises(sutra.InvalidArgument):
        client.search(k=3)  # neither vector nor text
    with pytest.raises(sutra.InvalidArgument):
        client.search(vector=vector(1), k=0)
    with pytest.raises(sutra.DimensionMismatch):
        client.search(vector=[1.0, 2.0], k=3)
    with pytest.raises(sutra.NoModel):
        client.search(text="no model to embed this", k=3)


def test_bad_input_is_refused_clearly_and_stores_nothing(server) -> None:
    client = client_for(server)
    with pytest.raises(sutra.DimensionMismatch) as wrong:
        client.store_concept("short", "x", embedding=[1.0, 2.0, 3.0])
    assert "256" in str(wrong.value) and isinstance(wrong.value, ValueError)
    assert wrong.value.code == 6 and wrong.value.name == "DimensionMismatch"
    with pytest.raises(TypeError):
        client.store_concept("strings", "x", embedding=["a"] * DIM)
    with pytest.raises(TypeError):
        client.store_concept("bytes", "x", embedding=b"\x00" * 1024)
    with pytest.raises(sutra.InvalidArgument):
        client.store_concept("nan", "x", embedding=[math.nan] * DIM)
    with pytest.raises(sutra.InvalidArgument):
        client.store_concept("", "an empty id")
    with pytest.raises(sutra.InvalidArgument):
        client.store_concept("2d", "x", embedding=np.zeros((2, 128), dtype=np.float32))
    with pytest.raises(sutra.InvalidArgument):
        client.store_concept("past", "x", metadata=ConceptMetadata(expires_at="2001-01-01T00:00:00"))
    with pytest.raises(sutra.InvalidArgument):
        client.store_concept("when", "x", metadata=ConceptMetadata(expires_at="tomorrow"))
    with pytest.raises(sutra.NoModel):
        client.learn_concept("no model here")
    assert client.stats()["concepts"] == 0


def test_a_restarted_server_is_reconnected_to(server) -> None:
    client = client_for(server)
    client.store_concept("kept", "durable", embedding=vector(2))
    server.restart()
    # The old connection is gone: the next call opens a new one. A call that finds the
    # broken connection first fails with ConnectionClosed and is not retried silently.
    for attempt in range(2):
        try:
            concept = client.get_concept_by_id("kept")
            break
        except sutra.ConnectionClosed:
            assert attempt == 0
    assert concept is not None and concept.embedding == vector(2)


def test_unreachable_and_stalled_servers_raise_connection_errors(server) -> None:
    with pytest.raises(sutra.ConnectionFailed) as refused:
        StorageClient(host="127.0.0.1", port=1).health_check()
    assert isinstance(refused.value, ConnectionError)
    client = client_for(server, timeout=0.5)
    client.health_check()
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(sutra.Timeout) as slow:
            client.get_concept_by_id("anything")
        assert isinstance(slow.value, TimeoutError)
        assert time.monotonic() - started < 5
    finally:
        server.resume()


def test_authentication(secured) -> None:
    with pytest.raises(sutra.Unauthenticated):
        client_for(secured).store_concept("x", "no token")
    with pytest.raises(sutra.Unauthenticated):
        client_for(secured, auth_token="wrong").stats()
    client = client_for(secured, auth_token="s3cret")
    client.store_concept("x", "with the token")
    assert client.get_concept_by_id("x").content == "with the token"


def test_the_asyncio_connection_reconnects_times_out_and_authenticates(server, secured) -> None:
    """The asyncio client drives its own connection: the same failures, the same classes."""

    async def main() -> None:
        unreachable = AsyncStorageClient(host="127.0.0.1", port=1)
        with pytest.raises(sutra.ConnectionFailed, match="cannot connect to 127.0.0.1:1"):
            await unreachable.health_check()
        # Every call waiting on the failed connection gets its own exception.
        failures = await asyncio.gather(*(unreachable.stats() for _ in range(3)),
                                        return_exceptions=True)
        assert all(isinstance(failure, sutra.ConnectionFailed) for failure in failures)
        assert len({id(failure) for failure in failures}) == 3
        with pytest.raises(sutra.ConnectionFailed, match="port must be 0-65535"):
            await AsyncStorageClient(host="127.0.0.1", port=70000).stats()

        client = AsyncStorageClient(host=server.host, port=server.port, timeout=0.5)
        await client.store_concept("kept", "durable", vector(2))
        server.restart()
        # The broken connection fails what finds it, once; the next call reconnects.
        for attempt in range(2):
            try:
                concept = await client.get_concept_by_id("kept")
                break
            except sutra.ConnectionClosed:
                assert attempt == 0
        assert concept is not None and concept.embedding == vector(2)

        server.pause()
        try:
            started = time.monotonic()
            late = await asyncio.gather(client.get_concept_by_id("kept"), client.stats(),
                                        return_exceptions=True)
            assert all(isinstance(failure, sutra.Timeout) for failure in late), late
            assert time.monotonic() - started < 5
        finally:
            server.resume()
        # The late answers are dropped; the connection serves the next calls.
        assert (await client.get_concept_by_id("kept")).content == "durable"
        await client.close()
        assert (await client.health_check())["status"] == "ok"  # a new connection

        with pytest.raises(sutra.Unauthenticated):
            await AsyncStorageClient(host=secured.host, port=secured.port).stats()
        wrong = AsyncStorageClient(host=secured.host, port=secured.port, auth_token="wrong")
        with pytest.raises(sutra.Unauthenticated):
            await wrong.stats()
        with pytest.raises(sutra.Unauthenticated):  # each new connection tries again
            await wrong.stats()
        good = AsyncStorageClient(host=secured.host, port=secured.port, auth_token="s3cret")
        stored = await asyncio.gather(*(good.store_concept(f"s{i}", "x") for i in range(50)))
        assert len(stored) == 50 and (await good.stats())["concepts"] == 50

        # max_in_flight bounds the calls on the wire; the rest wait their turn, in order.
        narrow = AsyncStorageClient(host=server.host, port=server.port, max_in_flight=2)
        found = await asyncio.gather(*(narrow.get_concept_by_id("kept") for _ in range(20)))
        assert [concept.id for concept in found] == ["kept"] * 20
        pipe = narrow.pipeline()
        for index in range(10):
            pipe.get_concept_by_id("kept" if index % 2 else "absent")
        assert [c is None for c in await pipe.execute()] == [index % 2 == 0 for index in range(10)]

    asyncio.run(main())


def in_threads(work: Callable[[int], None], count: int) -> None:
    """Runs ``work(0)`` .. ``work(count - 1)`` on threads of their own, all at once, and fails
    with every exception they raised."""
    failures: List[BaseException] = []

    def guarded(thread: int) -> None:
        try:
            work(thread)
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def test_threads_with_event_loops_of_their_own_share_one_asyncio_client(server) -> None:
    client = AsyncStorageClient(host=server.host, port=server.port)

    def work(thread: int) -> None:
        async def rounds(run: int) -> None:
            for round_ in range(5):
                keys = [f"l{thread}-{run}-{round_}-{index}" for index in range(50)]
                await asyncio.gather(*(client.store_concept(key, key) for key in keys))
                found = await asyncio.gather(*(client.get_concept_by_id(key) for key in keys))
                assert [concept.content for concept in found] == keys

        for run in range(2):  # a new loop each run: a new connection, the old one dropped
            asyncio.run(rounds(run))

    in_threads(work, 4)
    assert StorageClient(host=server.host, port=server.port).stats()["concepts"] == 4 * 2 * 5 * 50


def test_threads_share_one_client(server) -> None:
    client = client_for(server)

    def work(thread: int) -> None:
        for index in range(100):
            key = f"t{thread}-{index}"
            client.store_concept(key, key, embedding=vector(index))
            got = client.get_concept_by_id(key)
            assert got is not None and got.content == key

    in_threads(work, 8)
    assert client.stats()["concepts"] == 800


def test_asyncio_pipelines_concurrent_calls(server) -> None:
    async def main() -> None:
        async with AsyncStorageClient(host=server.host, port=server.port) as client:
            assert (await client.health_check())["status"] == "ok"
            outcomes = await asyncio.gather(
                *(client.store_concept(f"a{i}", f"text {i}", vector(i),
                                       ConceptMetadata(concept_type="async"))
                  for i in range(500))
            )
            assert all(outcome["created"] for outcome in outcomes)
            found = await asyncio.gather(*(client.get_concept_by_id(f"a{i}") for i in range(500)))
            assert [c.content for c in found] == [f"text {i}" for i in range(500)]
            assert found[9].embedding == vector(9)
            assert await client.get_concept_by_id("absent") is None
            assert len(await client.query_by_type("async")) == 500
            assert len(await client.query_by_type("async", limit=3)) == 3
            many = await client.get_many(["a1", "absent"])
            assert many[0].id == "a1" and many[1] is None
            await client.store_many([{"concept_id": "m", "content": "m"}])
            assert await client.delete_concept("m") is True
            with pytest.raises(sutra.DimensionMismatch):
                await client.store_concept("bad", "x", [1.0])
            assert await client.clear_type("async") == 500
            assert (await client.stats())["concepts"] == 0

    asyncio.run(main())


def test_asyncio_calls_are_futures_tasks_and_coroutines_alike(server) -> None:
    client = AsyncStorageClient(host=server.host, port=server.port)
    # Outside a running loop a method gives a coroutine, which makes the call when run.
    assert asyncio.run(client.health_check())["status"] == "ok"

    async def main() -> None:
        call = client.store_concept("t1", "one", vector(1))
        assert isinstance(call, asyncio.Future)  # gathered as it is, no task per call
        assert asyncio.iscoroutine(call)  # and accepted wherever a coroutine is
        assert (await call)["created"]
        # A call starts when it is made, like a task: not awaiting it does not stop it.
        client.store_concept("t2", "two", vector(2))
        task = asyncio.create_task(client.get_concept_by_id("t2"))
        assert (await task).content == "two"
        assert await asyncio.ensure_future(client.get_concept_by_id("absent")) is None
        assert (await asyncio.wait_for(client.stats(), timeout=5))["concepts"] == 2
        # A task awaiting a call can be cancelled; the connection goes on serving the rest.
        slow = asyncio.create_task(client.get_many([f"t{i % 3}" for i in range(1000)]))
        await asyncio.sleep(0)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        answers = [await call for call in asyncio.as_completed(
            [client.get_concept_by_id("t1"), client.delete_concept("t1")])]
        assert sorted(type(answer).__name__ for answer in answers) == ["Concept", "bool"]
        # A refused argument fails its own call only, when awaited.
        bad, good = client.get_concept_by_id(""), client.get_concept_by_id("t2")
        with pytest.raises(sutra.InvalidArgument, match="must not be empty"):
            await bad
        assert (await good).content == "two"

    asyncio.run(main())


class EmbeddingCache:
    """The seed's two-tier cache, as its embedding service uses this client: an in-process
    dict in front of a cache shard, keys ``emb:{model}:{16 hex of sha256(text)}``."""

    def __init__(self, host: str, port: int) -> None:
        self.l1: Dict[str, List[float]] = {}
        self.client = StorageClient(host=host, port=port)
        self.client.health_check()
        self.l2_hits = self.l2_misses = 0

    @staticmethod
    def key(text: str, model: str) -> str:
        return f"emb:{model}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def get(self, text: str, model: str = "default") -> Optional[List[float]]:
        key = self.key(text, model)
        if key in self.l1:
            return self.l1[key]
        concept = self.client.get_concept_by_id(key)
        if concept and concept.embedding:
            self.l1[key] = concept.embedding
            self.l2_hits += 1
            return concept.embedding
        self.l2_misses += 1
        return None

    def set(self, text: str, embedding: List[float], model: str = "default", ttl: int = 86400) -> None:
        key = self.key(text, model)
        self.l1[key] = embedding
        self.client.store_concept(
            concept_id=key,
            content=text[:200],
            embedding=embedding,
            metadata=ConceptMetadata(
                concept_type="embedding_cache",
                created_at=datetime.now().isoformat(),
                expires_at=(datetime.now() + timedelta(seconds=ttl)).isoformat(),
                model=model,
            ),
        )

    def clear(self) -> None:
        self.l1.clear()
        for concept in self.client.query_by_type("embedding_cache"):
            self.client.delete_concept(concept.id)
        self.l2_hits = self.l2_misses = 0

    def stats(self) -> Dict[str, int]:
        return {"l1_size": len(self.l1), "l2_hits": self.l2_hits, "l2_misses": self.l2_misses}


def test_the_seeds_two_tier_cache_on_a_cache_shard(shard) -> None:
    first = EmbeddingCache(shard.host, shard.port)
    assert first.get("hello") is None
    first.set("hello", vector(5))
    assert first.get("hello") == vector(5)  # from L1
    # Another process (a fresh L1) finds it in the shard.
    second = EmbeddingCache(shard.host, shard.port)
    assert second.get("hello") == vector(5)
    assert second.stats() == {"l1_size": 1, "l2_hits": 1, "l2_misses": 0}
    assert first.client.health_check()["role"] == "cache_shard"
    second.clear()
    assert EmbeddingCache(shard.host, shard.port).get("hello") is None


def test_learning_through_the_server(learner) -> None:
    client = client_for(learner)
    assert client.health_check()["model"] == "all-MiniLM-L6-v2"
    learned = client.learn_concept("The quick brown fox.", concept_type="note",
                                   attributes={"source": "test"})
    assert learned["id"].startswith("learn-") and learned["tokens"] > 0
    concept = client.get_concept_by_id(learned["id"])
    assert concept.model == "all-MiniLM-L6-v2" and len(concept.embedding) == DIM
    norm = math.sqrt(sum(v * v for v in concept.embedding))
    assert abs(norm - 1.0) < 1e-4
    batch = client.learn_batch(["one text", {"content": "two", "concept_id": "chosen"}])
    assert batch[1]["id"] == "chosen"

    async def learn_async() -> Dict[str, object]:
        return await AsyncStorageClient(host=learner.host, port=learner.port).learn_concept(
            "The quick brown fox.")

    assert asyncio.run(learn_async())["id"] == client.learn_concept("The quick brown fox.")["id"]


def test_pipelines_send_many_calls_and_answer_each(server) -> None:
    client = client_for(server)
    with client.pipeline() as pipe:
        for index in range(50):
            pipe.store_concept(f"p{index}", f"text {index}", vector(index),
                               ConceptMetadata(concept_type="piped"))
        outcomes = pipe.execute()
    assert len(outcomes) == 50 and all(outcome["created"] for outcome in outcomes)
    pipe = client.pipeline()
    pipe.get_concept_by_id("p1").get_concept_by_id("absent").get_many(["p2", "nope"])
    pipe.delete_concept("p3").query_by_type_page("piped", 5).stats()
    got, absent, many, deleted, page, stats = pipe.execute()
    assert got.embedding == vector(1) and absent is None
    assert [c and c.id for c in many] == ["p2", None]
    assert deleted is True and [c.id for c in page] == ["p0", "p1", "p10", "p11", "p12"]
    # The calls of a pipeline are independent: a read need not see a write queued before it.
    assert stats["concepts"] in (49, 50)
    assert client.stats()["concepts"] == 49
    # Each call fails alone; the first error is raised, or returned in its place.
    pipe = client.pipeline()
    pipe.store_concept("short", "x", [1.0]).get_concept_by_id("p4").store_concept("", "no id")
    with pytest.raises(sutra.DimensionMismatch):
        pipe.execute()
    pipe.store_concept("short", "x", [1.0]).get_concept_by_id("p4").store_concept("", "no id")
    wrong, fine, refused = pipe.execute(raise_on_error=False)
    assert isinstance(wrong, sutra.DimensionMismatch) and isinstance(refused, sutra.InvalidArgument)
    assert fine.content == "text 4"

    async def piped() -> None:
        async with AsyncStorageClient(host=server.host, port=server.port) as aclient:
            pipe = aclient.pipeline()
            for index in range(40):
                pipe.get_concept_by_id(f"p{index}")
            found = await pipe.execute()
            assert [c is None for c in found].count(True) == 1  # p3 was deleted
            assert found[7].content == "text 7"

    asyncio.run(piped())
