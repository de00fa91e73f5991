"""Python client of sutra-storage, over the Rust client (`sutra-client`).

The seed's code runs unchanged::

    from sutra_storage_client_tcp import StorageClient, ConceptMetadata

    client = StorageClient(host="127.0.0.1", port=50052)
    client.health_check()
    client.store_concept(
        concept_id="emb:model:0123456789abcdef",
        content="a text",
        embedding=[0.1] * 256,
        metadata=ConceptMetadata(concept_type="embedding_cache", model="model",
                                 expires_at=(datetime.now() + timedelta(days=1)).isoformat()),
    )
    concept = client.get_concept_by_id("emb:model:0123456789abcdef")
    if concept and concept.embedding: ...

:class:`StorageClient` blocks (with the GIL released while it waits) and may be shared by
threads; :class:`AsyncStorageClient` has the same methods, awaitable, and pipelines
concurrent calls over a connection its event loop drives. Both reconnect on the next call
after the connection breaks; a call that was in flight then fails with :class:`ConnectionClosed`
(it may or may not have been applied) and is never retried silently. Errors are the classes
of :mod:`sutra_storage_client_tcp.errors`, re-exported here.
"""

from __future__ import annotations

import array
import asyncio
import math
import sys
import time
from datetime import datetime
from typing import (
    Any,
    Awaitable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import errors
from ._aio import Call as _Call
from ._aio import Connection as _Connection
from ._aio import Group as _Group
from ._aio import Settings as _Settings
from ._aio import Sink as _Sink
from ._aio import Slot as _Slot
from ._native import Client as _Native
from ._native import Concept
from ._native import set_error_factory as _set_error_factory
from .errors import (
    Busy,
    ConnectionClosed,
    ConnectionFailed,
    DimensionMismatch,
    FrameTooLarge,
    Full,
    InternalError,
    InvalidArgument,
    MalformedFrame,
    NoModel,
    NotFound,
    ProtocolError,
    ServerError,
    StorageError,
    StorageUnavailable,
    Timeout,
    Unauthenticated,
    UnknownOpcode,
    UnsupportedVersion,
)

_set_error_factory(errors._make)

__all__ = [
    "AsyncPipeline",
    "AsyncStorageClient",
    "Busy",
    "Concept",
    "ConceptMetadata",
    "ConnectionClosed",
    "ConnectionFailed",
    "DimensionMismatch",
    "FrameTooLarge",
    "Full",
    "InternalError",
    "InvalidArgument",
    "MalformedFrame",
    "NoModel",
    "NotFound",
    "Pipeline",
    "ProtocolError",
    "ServerError",
    "StorageClient",
    "StorageError",
    "StorageUnavailable",
    "Timeout",
    "Unauthenticated",
    "UnknownOpcode",
    "UnsupportedVersion",
]

#: The largest QueryByType page the server takes by default (`MAX_QUERY_LIMIT`).
DEFAULT_PAGE_SIZE = 1000

Embedding = Union[Sequence[float], Any]  # a sequence of numbers or a 1-D numpy array
Moment = Union[str, datetime, None]


def _timestamp(moment: Moment, field: str) -> Optional[float]:
    """Unix seconds of an ISO-8601 string or a datetime (naive ones are local time, as
    ``datetime.now().isoformat()`` writes them)."""
    if moment is None or moment == "":
        return None
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgument(f"{field}: {moment!r} is not an ISO-8601 time") from None
    if not isinstance(moment, datetime):
        raise TypeError(f"{field} must be an ISO-8601 string or a datetime")
    return moment.timestamp()


class ConceptMetadata:
    """The seed's metadata of a stored concept.

    ``expires_at`` (an ISO-8601 string or a datetime) becomes the concept's TTL, counted from
    the call; ``created_at`` is accepted for the seed's code and ignored: the server stamps
    each version with its own clock. ``attributes`` are free-form strings.
    """

    __slots__ = ("concept_type", "created_at", "expires_at", "model", "attributes")

    def __init__(
        self,
        concept_type: str = "",
        created_at: Moment = None,
        expires_at: Moment = None,
        model: str = "",
        attributes: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.concept_type = concept_type
        self.created_at = created_at
        self.expires_at = expires_at
        self.model = model
        self.attributes = dict(attributes or {})

    def ttl_seconds(self) -> Optional[int]:
        """Seconds from now to ``expires_at`` (rounded up); ``None`` without one."""
        expires = _timestamp(self.expires_at, "expires_at")
        if expires is None:
            return None
        remaining = math.ceil(expires - time.time())
        if remaining <= 0:
            raise InvalidArgument(f"expires_at {self.expires_at!r} is in the past")
        return remaining

    def __repr__(self) -> str:
        return (
            f"ConceptMetadata(concept_type={self.concept_type!r}, model={self.model!r}, "
            f"expires_at={self.expires_at!r}, attributes={self.attributes!r})"
        )


def _embedding(embedding: Optional[Embedding]) -> Union[None, List[float], bytes]:
    """A list of numbers as it is (the native half reads it in place), or the little-endian
    float32 bytes of a 1-D numpy array or another sequence of numbers."""
    if embedding is None or type(embedding) is list:
        return embedding
    if isinstance(embedding, (str, bytes, bytearray, memoryview)):
        raise TypeError("embedding must be a sequence of floats or a numpy array")
    if hasattr(embedding, "__array__") and hasattr(embedding, "dtype"):
        import numpy

        values = numpy.asarray(embedding)
        if values.ndim != 1:
            raise InvalidArgument(f"embedding must be one-dimensional, not {values.shape}")
        if values.dtype.kind not in "fiub":
            raise TypeError(f"embedding must hold numbers, not {values.dtype}")
        return numpy.ascontiguousarray(values, dtype="<f4").tobytes()
    try:
        floats = array.array("f", embedding)
    except TypeError as error:
        raise TypeError(f"embedding must be a sequence of floats: {error}") from None
    if sys.byteorder == "big":
        floats.byteswap()
    return floats.tobytes()


def _store_item(
    concept_id: str,
    content: str,
    embedding: Optional[Embedding],
    metadata: Optional[ConceptMetadata],
    ttl_seconds: Optional[int],
) -> Tuple[Any, ...]:
    metadata = metadata or ConceptMetadata()
    if ttl_seconds is None:
        ttl_seconds = metadata.ttl_seconds()
    return (
        concept_id,
        content,
        metadata.concept_type,
        metadata.model,
        {str(k): str(v) for k, v in metadata.attributes.items()},
        _embedding(embedding),
        ttl_seconds,
    )


def _store_items(concepts: Iterable[Mapping[str, Any]]) -> List[Tuple[Any, ...]]:
    return [
        _store_item(
            item["concept_id"],
            item.get("content", ""),
            item.get("embedding"),
            item.get("metadata"),
            item.get("ttl_seconds"),
        )
        for item in concepts
    ]


def _search_args(
    vector: Optional[Embedding],
    text: Optional[str],
    k: int,
    concept_type: str,
    exact: bool,
    ef: int,
    include_concepts: bool,
) -> Tuple[Any, ...]:
    if (vector is None) == (text is None):
        raise InvalidArgument("give exactly one of vector= and text=")
    return (_embedding(vector), text, k, concept_type, exact, ef, include_concepts)


def _learn_item(item: Union[str, Mapping[str, Any]]) -> Tuple[Any, ...]:
    if isinstance(item, str):
        return (item, "", {}, None, None)
    return (
        item["content"],
        item.get("concept_type", ""),
        {str(k): str(v) for k, v in (item.get("attributes") or {}).items()},
        item.get("concept_id"),
        item.get("ttl_seconds"),
    )


def _learn_args(
    content: str,
    concept_type: str,
    attributes: Optional[Mapping[str, str]],
    concept_id: Optional[str],
    ttl_seconds: Optional[int],
) -> Dict[str, Any]:
    return {"content": content, "concept_type": concept_type, "attributes": attributes,
            "concept_id": concept_id, "ttl_seconds": ttl_seconds}


class _Base:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 50051,
        timeout: float = 30.0,
        auth_token: Optional[str] = None,
        connect_timeout: float = 5.0,
        max_in_flight: int = 4096,
    ) -> None:
        self.host = host
        self.port = port
        for value, name in ((timeout, "timeout"), (connect_timeout, "connect_timeout")):
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number of seconds")
        self._settings = _Settings(
            host=host,
            port=port,
            address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            timeout=float(timeout),
            connect_timeout=float(connect_timeout),
            auth_token=auth_token,
            max_in_flight=max(1, max_in_flight),
        )
        self._start()

    def _start(self) -> None:
        """Sets up what the client's calls go through (nothing connects yet)."""
        raise NotImplementedError

    @property
    def address(self) -> str:
        return self._settings.address

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"


def _outcome(name: str, ok: bool, value: Any) -> Any:
    """A pipelined call's answer as the client's method returns it."""
    if not ok:
        if name == "get" and isinstance(value, NotFound):
            return None
        return value
    if name == "query":
        return value[0]
    return value


class _Queue:
    """The calls of a pipeline: the client's methods, queued instead of sent."""

    def __init__(self) -> None:
        self._calls: List[Tuple[str, Tuple[Any, ...]]] = []

    def __len__(self) -> int:
        return len(self._calls)

    def _add(self, name: str, *args: Any) -> "_Queue":
        self._calls.append((name, args))
        return self

    def health_check(self) -> "_Queue":
        return self._add("health")

    def stats(self) -> "_Queue":
        return self._add("stats")

    def store_concept(
        self,
        concept_id: str,
        content: str,
        embedding: Optional[Embedding] = None,
        metadata: Optional[ConceptMetadata] = None,
        ttl_seconds: Optional[int] = None,
    ) -> "_Queue":
        return self._add("store", _store_item(concept_id, content, embedding, metadata,
                                              ttl_seconds))

    def get_concept_by_id(self, concept_id: str) -> "_Queue":
        return self._add("get", concept_id)

    def get_many(self, concept_ids: Sequence[str]) -> "_Queue":
        return self._add("get_many", list(concept_ids))

    def query_by_type_page(self, concept_type: str, limit: int = DEFAULT_PAGE_SIZE) -> "_Queue":
        """The first page of a type (a pipeline holds single requests, not page loops)."""
        return self._add("query", concept_type, limit, "")

    def delete_concept(self, concept_id: str) -> "_Queue":
        return self._add("delete", concept_id)

    def clear_type(self, concept_type: str) -> "_Queue":
        return self._add("clear_type", concept_type)

    def _answers(self, results: List[Tuple[bool, Any]], raise_on_error: bool) -> List[Any]:
        answers = [_outcome(name, ok, value)
                   for (name, _), (ok, value) in zip(self._calls, results)]
        self._calls = []
        if raise_on_error:
            for answer in answers:
                if isinstance(answer, BaseException):
                    raise answer
        return answers


class Pipeline(_Queue):
    """Calls queued with the client's method names and sent together by :meth:`execute`,
    pipelined over the connection: one wait (with the GIL released) for all of them, as
    redis-py's pipeline. Not a transaction: each call succeeds or fails alone, and the calls
    are independent (a read may be answered before a write queued ahead of it is applied;
    :meth:`StorageClient.store_many` stores several concepts as one write)."""

    def __init__(self, native: _Native) -> None:
        super().__init__()
        self._native = native

    def execute(self, raise_on_error: bool = True) -> List[Any]:
        """The answers in call order (``None`` for a missing concept). The first error is
        raised, or with ``raise_on_error=False`` returned in its place."""
        return self._answers(self._native.batch(self._calls), raise_on_error)

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self._calls = []


class AsyncPipeline(_Queue):
    """:class:`Pipeline` for :class:`AsyncStorageClient`: ``await pipeline.execute()``."""

    def __init__(self, client: "AsyncStorageClient") -> None:
        super().__init__()
        self._client = client

    async def execute(self, raise_on_error: bool = True) -> List[Any]:
        if not self._calls:
            return []
        loop = asyncio.get_running_loop()
        future: "asyncio.Future[List[Tuple[bool, Any]]]" = loop.create_future()
        count = len(self._calls)
        group = _Group(future, count)
        self._client._connection(loop).submit(list(self._calls), [group] * count,
                                              list(range(count)))
        return self._answers(await future, raise_on_error)

    async def __aenter__(self) -> "AsyncPipeline":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._calls = []


class StorageClient(_Base):
    """A blocking client; safe to share between threads (calls from several threads are
    pipelined over one connection, the calling threads taking turns at its I/O).

    ``timeout`` bounds each call in seconds, ``connect_timeout`` opening the connection;
    ``auth_token`` is the server's SUTRA_AUTH_TOKEN; ``max_in_flight`` bounds the calls sent
    and not yet answered (more wait their turn). The connection opens on the first call.
    """

    def _start(self) -> None:
        settings = self._settings
        self._native = _Native(settings.address, settings.timeout, settings.connect_timeout,
                               settings.auth_token, settings.max_in_flight)

    def health_check(self) -> Dict[str, Any]:
        """The server's health (``status``, ``role``, ``vector_dimension``, ``concepts``,
        ``version``, ``uptime_seconds``); raises when it cannot be reached."""
        return self._native.call("health", ())

    def store_concept(
        self,
        concept_id: str,
        content: str,
        embedding: Optional[Embedding] = None,
        metadata: Optional[ConceptMetadata] = None,
        ttl_seconds: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Stores (or replaces) a concept; ``{"created", "created_at_ms", "expires_at_ms"}``.

        ``ttl_seconds`` overrides ``metadata.expires_at``; without either the server's
        default applies (0: never expires)."""
        item = _store_item(concept_id, content, embedding, metadata, ttl_seconds)
        return self._native.call("store", (item,))

    def store_many(self, concepts: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
        """Stores several concepts in one request, all or none; each a mapping with
        ``concept_id``, ``content`` and optionally ``embedding``, ``metadata``,
        ``ttl_seconds``."""
        return self._native.call("store_many", (_store_items(concepts),))

    def get_concept_by_id(self, concept_id: str) -> Optional[Concept]:
        """The concept, or ``None`` when there is none (or it expired)."""
        try:
            return self._native.call("get", (concept_id,))
        except NotFound:
            return None

    def get_many(self, concept_ids: Sequence[str]) -> List[Optional[Concept]]:
        """The concepts in order, ``None`` for each missing id, in one request."""
        return self._native.call("get_many", (list(concept_ids),))

    def query_by_type(self, concept_type: str, limit: Optional[int] = None) -> List[Concept]:
        """Every concept of a type (at most ``limit``), in id order, page after page."""
        return list(self.iter_type(concept_type, limit=limit))

    def iter_type(
        self,
        concept_type: str,
        limit: Optional[int] = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[Concept]:
        """The concepts of a type, fetched a page at a time as they are consumed."""
        cursor, remaining = "", limit
        while remaining is None or remaining > 0:
            size = page_size if remaining is None else min(page_size, remaining)
            raw, cursor = self._native.call("query", (concept_type, size, cursor))
            yield from raw
            if remaining is not None:
                remaining -= len(raw)
            if not cursor:
                return

    def delete_concept(self, concept_id: str) -> bool:
        """Removes a concept; whether it existed."""
        return self._native.call("delete", (concept_id,))

    def clear_type(self, concept_type: str) -> int:
        """Removes every concept of a type; how many were removed."""
        return self._native.call("clear_type", (concept_type,))

    def stats(self) -> Dict[str, Any]:
        """The server's counters (``concepts``, ``requests_total``, ...)."""
        return self._native.call("stats", ())

    def search(
        self,
        vector: Optional[Embedding] = None,
        text: Optional[str] = None,
        k: int = 10,
        concept_type: str = "",
        exact: bool = False,
        ef: int = 0,
        include_concepts: bool = False,
    ) -> List[Dict[str, Any]]:
        """The ``k`` stored concepts most similar (cosine) to ``vector`` or to ``text`` (the
        server's model embeds it as a query), of ``concept_type`` if given: best first, each
        ``{"id", "score", "concept"}`` (``concept`` is ``None`` unless ``include_concepts``)."""
        return self._native.call(
            "search", _search_args(vector, text, k, concept_type, exact, ef, include_concepts)
        )

    def learn_concept(
        self,
        content: str,
        concept_type: str = "",
        attributes: Optional[Mapping[str, str]] = None,
        concept_id: Optional[str] = None,
        ttl_seconds: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Embeds ``content`` with the server's model and stores it; ``{"id", "created",
        "tokens", "truncated", ...}``. Without an id, the id is derived from the text."""
        item = _learn_item(_learn_args(content, concept_type, attributes, concept_id,
                                       ttl_seconds))
        return self._native.call("learn", (item,))

    def learn_batch(self, items: Iterable[Union[str, Mapping[str, Any]]]) -> List[Dict[str, Any]]:
        """Learns several texts in one request (strings, or mappings with ``content`` and
        the arguments of :meth:`learn_concept`), all or none."""
        return self._native.call("learn_batch", ([_learn_item(item) for item in items],))

    def pipeline(self) -> Pipeline:
        """A :class:`Pipeline` on this client's connection."""
        return Pipeline(self._native)

    def close(self) -> None:
        """Nothing to release: the connection closes with the last reference."""

    def __enter__(self) -> "StorageClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStorageClient(_Base):
    """The asyncio client: :class:`StorageClient`'s methods, awaitable.

    A call starts when it is made (as if it were wrapped in a task): the calls made in one
    turn of the event loop (``asyncio.gather`` of many) are written together, pipelined over
    the loop's one connection, which the event loop reads and writes itself (no other thread
    takes part, and the loop never waits on the network). Each method returns an
    ``asyncio.Future`` that is also a coroutine: it can be awaited, gathered, or given to
    ``asyncio.create_task``. Called outside a running event loop, a method returns a plain
    coroutine that makes the call when awaited (``asyncio.run(client.health_check())``). A
    refused argument fails its own call only. Each event loop that uses the client gets a
    connection of its own; :meth:`close` closes the current loop's. The settings are
    :class:`StorageClient`'s."""

    def _start(self) -> None:
        # Calls made in this turn of each loop, not yet written: (calls, sinks, slots).
        self._pending: Dict[asyncio.AbstractEventLoop,
                            Tuple[List[Tuple[str, Tuple[Any, ...]]], List[_Sink],
                                  List[_Slot]]] = {}
        self._connections: Dict[asyncio.AbstractEventLoop, _Connection] = {}

    def _call(self, name: str, *args: Any) -> Awaitable[Any]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop yet: the call is made when the coroutine runs
            return self._later(name, args)
        call = _Call(loop=loop)
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = ([], [], [])
            loop.call_soon(self._flush, loop)
        pending[0].append((name, args))
        pending[1].append(call)
        pending[2].append(name)
        return call

    async def _later(self, name: str, args: Tuple[Any, ...]) -> Any:
        return await self._call(name, *args)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        calls, sinks, slots = self._pending.pop(loop)
        self._connection(loop).submit(calls, sinks, slots)

    def _connection(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        """The loop's connection, opening a new one if there is none or it ended."""
        connection = self._connections.get(loop)
        if connection is None or connection.ended is not None:
            # A snapshot of the keys: loops on other threads may add theirs meanwhile.
            for gone in [other for other in list(self._connections) if other.is_closed()]:
                self._connections.pop(gone, None)
            connection = self._connections[loop] = _Connection(loop, self._settings)
        return connection

    def health_check(self) -> Awaitable[Dict[str, Any]]:
        return self._call("health")

    def store_concept(
        self,
        concept_id: str,
        content: str,
        embedding: Optional[Embedding] = None,
        metadata: Optional[ConceptMetadata] = None,
        ttl_seconds: Optional[int] = None,
    ) -> Awaitable[Dict[str, Any]]:
        item = _store_item(concept_id, content, embedding, metadata, ttl_seconds)
        return self._call("store", item)

    def store_many(self, concepts: Iterable[Mapping[str, Any]]) -> Awaitable[List[Dict[str, Any]]]:
        return self._call("store_many", _store_items(concepts))

    def get_concept_by_id(self, concept_id: str) -> Awaitable[Optional[Concept]]:
        """The concept, or ``None`` when there is no such concept."""
        return self._call("get", concept_id)

    def get_many(self, concept_ids: Sequence[str]) -> Awaitable[List[Optional[Concept]]]:
        return self._call("get_many", list(concept_ids))

    async def query_by_type(self, concept_type: str, limit: Optional[int] = None) -> List[Concept]:
        found: List[Concept] = []
        cursor = ""
        while limit is None or len(found) < limit:
            size = DEFAULT_PAGE_SIZE if limit is None else min(DEFAULT_PAGE_SIZE,
                                                               limit - len(found))
            raw, cursor = await self._call("query", concept_type, size, cursor)
            found.extend(raw)
            if not cursor:
                break
        return found

    def delete_concept(self, concept_id: str) -> Awaitable[bool]:
        return self._call("delete", concept_id)

    def clear_type(self, concept_type: str) -> Awaitable[int]:
        return self._call("clear_type", concept_type)

    def stats(self) -> Awaitable[Dict[str, Any]]:
        return self._call("stats")

    def search(
        self,
        vector: Optional[Embedding] = None,
        text: Optional[str] = None,
        k: int = 10,
        concept_type: str = "",
        exact: bool = False,
        ef: int = 0,
        include_concepts: bool = False,
    ) -> Awaitable[List[Dict[str, Any]]]:
        return self._call(
            "search", *_search_args(vector, text, k, concept_type, exact, ef, include_concepts)
        )

    def learn_concept(
        self,
        content: str,
        concept_type: str = "",
        attributes: Optional[Mapping[str, str]] = None,
        concept_id: Optional[str] = None,
        ttl_seconds: Optional[int] = None,
    ) -> Awaitable[Dict[str, Any]]:
        item = _learn_item(_learn_args(content, concept_type, attributes, concept_id,
                                       ttl_seconds))
        return self._call("learn", item)

    def learn_batch(
        self, items: Iterable[Union[str, Mapping[str, Any]]]
    ) -> Awaitable[List[Dict[str, Any]]]:
        return self._call("learn_batch", [_learn_item(item) for item in items])

    def pipeline(self) -> AsyncPipeline:
        """An :class:`AsyncPipeline` on this client's connection."""
        return AsyncPipeline(self)

    async def close(self) -> None:
        """Closes the running loop's connection; calls still waiting on it fail with
        :class:`ConnectionClosed`. A later call opens a new one."""
        connection = self._connections.pop(asyncio.get_running_loop(), None)
        if connection is not None:
            connection.close()

    async def __aenter__(self) -> "AsyncStorageClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
