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
threads; :class:`AsyncStorageClient` has the same methods as coroutines and pipelines
concurrent calls over its one connection. Both reconnect on the next call after the
connection breaks; a call that was in flight then fails with :class:`ConnectionClosed`
(it may or may not have been applied) and is never retried silently. Errors are the classes
of :mod:`sutra_storage_client_tcp.errors`, re-exported here.
"""

from __future__ import annotations

import array
import asyncio
import atexit
import math
import sys
import time
from datetime import datetime, timezone
from typing import (
    Any,
    Callable,
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
from ._native import Client as _Native
from ._native import set_error_factory as _set_error_factory
from ._native import shutdown as _native_shutdown
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
# Before the interpreter finalizes, stop the runtime threads from delivering late answers.
atexit.register(_native_shutdown)

__all__ = [
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


def _iso(ms: Optional[int]) -> Optional[str]:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


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


class Concept:
    """A stored concept.

    ``embedding`` is a list of floats (``None`` without a vector); :meth:`embedding_array`
    is the same vector as a read-only numpy float32 array over the received bytes, with no
    copy. ``created_at``/``expires_at`` are ISO-8601 UTC strings (``expires_at`` ``None``
    for no expiry); ``created_at_ms``/``expires_at_ms`` the server's Unix milliseconds.
    """

    __slots__ = (
        "id",
        "content",
        "concept_type",
        "model",
        "attributes",
        "created_at_ms",
        "expires_at_ms",
        "_vector",
        "_list",
    )

    def __init__(self, raw: Tuple[Any, ...]) -> None:
        (
            self.id,
            self.content,
            self.concept_type,
            self.model,
            self.attributes,
            self._vector,
            self.created_at_ms,
            self.expires_at_ms,
        ) = raw
        self._list: Optional[List[float]] = None

    @property
    def embedding(self) -> Optional[List[float]]:
        if self._vector is None:
            return None
        if self._list is None:
            values = array.array("f")
            values.frombytes(self._vector)
            if sys.byteorder == "big":
                values.byteswap()
            self._list = values.tolist()
        return self._list

    def embedding_array(self) -> Any:
        """The vector as a read-only numpy float32 array (no copy); ``None`` without one."""
        if self._vector is None:
            return None
        import numpy

        return numpy.frombuffer(self._vector, dtype="<f4")

    @property
    def dimension(self) -> int:
        return 0 if self._vector is None else len(self._vector) // 4

    @property
    def created_at(self) -> str:
        return _iso(self.created_at_ms) or ""

    @property
    def expires_at(self) -> Optional[str]:
        return _iso(self.expires_at_ms)

    @property
    def metadata(self) -> ConceptMetadata:
        return ConceptMetadata(
            concept_type=self.concept_type,
            created_at=self.created_at,
            expires_at=self.expires_at,
            model=self.model,
            attributes=self.attributes,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Concept):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _FIELDS)

    def __repr__(self) -> str:
        return (
            f"Concept(id={self.id!r}, concept_type={self.concept_type!r}, "
            f"model={self.model!r}, dimension={self.dimension}, content={self.content[:40]!r})"
        )


_FIELDS = ("id", "content", "concept_type", "model", "attributes", "_vector", "created_at_ms",
           "expires_at_ms")


def _embedding_bytes(embedding: Optional[Embedding]) -> Optional[bytes]:
    """Little-endian float32 bytes of a list of numbers or a 1-D numpy array."""
    if embedding is None:
        return None
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
        values = array.array("f", embedding)
    except TypeError as error:
        raise TypeError(f"embedding must be a sequence of floats: {error}") from None
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


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
        _embedding_bytes(embedding),
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


def _concepts(raw: List[Optional[Tuple[Any, ...]]]) -> List[Optional[Concept]]:
    return [None if item is None else Concept(item) for item in raw]


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
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._native = _Native(address, float(timeout), float(connect_timeout), auth_token,
                               max_in_flight)

    @property
    def address(self) -> str:
        return self._native.addr

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"


class StorageClient(_Base):
    """A blocking client; safe to share between threads (calls from several threads are
    pipelined over one connection).

    ``timeout`` bounds each call in seconds, ``connect_timeout`` opening the connection;
    ``auth_token`` is the server's SUTRA_AUTH_TOKEN. The connection opens on the first call.
    """

    def health_check(self) -> Dict[str, Any]:
        """The server's health (``status``, ``role``, ``vector_dimension``, ``concepts``,
        ``version``, ``uptime_seconds``); raises when it cannot be reached."""
        return self._native.health()

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
        return self._native.store(item)

    def store_many(self, concepts: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
        """Stores several concepts in one request, all or none; each a mapping with
        ``concept_id``, ``content`` and optionally ``embedding``, ``metadata``,
        ``ttl_seconds``."""
        return self._native.store_many(_store_items(concepts))

    def get_concept_by_id(self, concept_id: str) -> Optional[Concept]:
        """The concept, or ``None`` when there is none (or it expired)."""
        try:
            return Concept(self._native.get(concept_id))
        except NotFound:
            return None

    def get_many(self, concept_ids: Sequence[str]) -> List[Optional[Concept]]:
        """The concepts in order, ``None`` for each missing id, in one request."""
        return _concepts(self._native.get_many(list(concept_ids)))

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
            raw, cursor = self._native.query(concept_type, size, cursor)
            for item in raw:
                yield Concept(item)
            if remaining is not None:
                remaining -= len(raw)
            if not cursor:
                return

    def delete_concept(self, concept_id: str) -> bool:
        """Removes a concept; whether it existed."""
        return self._native.delete(concept_id)

    def clear_type(self, concept_type: str) -> int:
        """Removes every concept of a type; how many were removed."""
        return self._native.clear_type(concept_type)

    def stats(self) -> Dict[str, Any]:
        """The server's counters (``concepts``, ``requests_total``, ...)."""
        return self._native.stats()

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
        return self._native.learn(item)

    def learn_batch(self, items: Iterable[Union[str, Mapping[str, Any]]]) -> List[Dict[str, Any]]:
        """Learns several texts in one request (strings, or mappings with ``content`` and
        the arguments of :meth:`learn_concept`), all or none."""
        return self._native.learn_batch([_learn_item(item) for item in items])

    def close(self) -> None:
        """Nothing to release: the connection closes with the last reference."""

    def __enter__(self) -> "StorageClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _settle(future: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class AsyncStorageClient(_Base):
    """The asyncio client: :class:`StorageClient`'s methods as coroutines. Concurrent calls
    (``asyncio.gather``) are pipelined over the one connection; the event loop never waits
    on the network."""

    def _call(self, method: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def done(ok: bool, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(_settle, future, ok, value)
            except RuntimeError:  # the loop closed while the call was in flight
                pass

        method(*args, callback=done)
        return future

    async def health_check(self) -> Dict[str, Any]:
        return await self._call(self._native.health)

    async def store_concept(
        self,
        concept_id: str,
        content: str,
        embedding: Optional[Embedding] = None,
        metadata: Optional[ConceptMetadata] = None,
        ttl_seconds: Optional[int] = None,
    ) -> Dict[str, Any]:
        item = _store_item(concept_id, content, embedding, metadata, ttl_seconds)
        return await self._call(self._native.store, item)

    async def store_many(self, concepts: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
        return await self._call(self._native.store_many, _store_items(concepts))

    async def get_concept_by_id(self, concept_id: str) -> Optional[Concept]:
        try:
            return Concept(await self._call(self._native.get, concept_id))
        except NotFound:
            return None

    async def get_many(self, concept_ids: Sequence[str]) -> List[Optional[Concept]]:
        return _concepts(await self._call(self._native.get_many, list(concept_ids)))

    async def query_by_type(self, concept_type: str, limit: Optional[int] = None) -> List[Concept]:
        found: List[Concept] = []
        cursor = ""
        while limit is None or len(found) < limit:
            size = DEFAULT_PAGE_SIZE if limit is None else min(DEFAULT_PAGE_SIZE,
                                                               limit - len(found))
            raw, cursor = await self._call(self._native.query, concept_type, size, cursor)
            found.extend(Concept(item) for item in raw)
            if not cursor:
                break
        return found

    async def delete_concept(self, concept_id: str) -> bool:
        return await self._call(self._native.delete, concept_id)

    async def clear_type(self, concept_type: str) -> int:
        return await self._call(self._native.clear_type, concept_type)

    async def stats(self) -> Dict[str, Any]:
        return await self._call(self._native.stats)

    async def learn_concept(
        self,
        content: str,
        concept_type: str = "",
        attributes: Optional[Mapping[str, str]] = None,
        concept_id: Optional[str] = None,
        ttl_seconds: Optional[int] = None,
    ) -> Dict[str, Any]:
        item = _learn_item(_learn_args(content, concept_type, attributes, concept_id,
                                       ttl_seconds))
        return await self._call(self._native.learn, item)

    async def learn_batch(
        self, items: Iterable[Union[str, Mapping[str, Any]]]
    ) -> List[Dict[str, Any]]:
        return await self._call(self._native.learn_batch, [_learn_item(item) for item in items])

    async def close(self) -> None:
        """Nothing to release: the connection closes with the last reference."""

    async def __aenter__(self) -> "AsyncStorageClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
