"""The asyncio client's connection: the event loop reads and writes the socket itself.

:class:`Connection` is an ``asyncio.Protocol`` over one TCP connection; the native
:class:`~sutra_storage_client_tcp._native.Wire` encodes its calls and turns the bytes it reads
into answers (the same requests, framing and answer objects as the blocking client). No other
thread takes part: a call costs the event loop's own wake-up when its answer arrives, nothing
more (handing calls to a runtime thread and their answers back cost two more wake-ups per
batch, ~120 µs for a single call on a 2-core VM).
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from typing import Any, Deque, Dict, List, NamedTuple, Optional, Tuple, Union

from ._native import Wire
from .errors import NotFound, StorageError, _make


class Settings(NamedTuple):
    """Where and how a client connects (see ``AsyncStorageClient``)."""

    host: str
    port: int
    address: str
    timeout: float
    connect_timeout: float
    auth_token: Optional[str]
    max_in_flight: int


class Call(asyncio.Future):  # type: ignore[type-arg]
    """A call of ``AsyncStorageClient`` in flight.

    An ``asyncio.Future``, so that ``asyncio.gather``, ``asyncio.as_completed`` and
    ``wait_for`` take it as it is (a coroutine would cost each call a task and two more
    visits to the loop: about 2.3 µs of the 3.9 µs asyncio spends on each call of a
    ``gather`` on this project's machine). It is also a coroutine (``send``, ``throw``,
    ``close``), so that ``asyncio.create_task`` and ``ensure_future`` take it as they would
    the result of an ``async def`` method."""

    def send(self, value: Any) -> Any:
        # Stateless: each step looks at the future afresh (pending: yield it; done: return).
        return self.__await__().send(value)

    def throw(self, *exc: Any) -> Any:
        return self.__await__().throw(*exc)

    def close(self) -> None:
        """Nothing to close: the call goes on; its answer is dropped if nobody awaits it."""


class Group:
    """The calls of an ``AsyncPipeline``: one future for all their ``(ok, value)`` answers,
    in call order."""

    __slots__ = ("future", "remaining", "results")

    def __init__(self, future: "asyncio.Future[List[Tuple[bool, Any]]]", count: int) -> None:
        self.future = future
        self.remaining = count
        self.results: List[Tuple[bool, Any]] = [(False, None)] * count

    def put(self, index: int, ok: bool, value: Any) -> None:
        self.results[index] = (ok, value)
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(self.results)


# Where an answer goes: a future (with the call's name) or a group (with the call's index).
Sink = Union["asyncio.Future[Any]", Group]
Slot = Union[str, int]


def again(error: BaseException) -> BaseException:
    """A fresh copy of ``error`` for one more call (each raise adds to its traceback)."""
    return copy.copy(error)


def settle(sink: Sink, slot: Slot, ok: bool, value: Any) -> None:
    """Delivers one answer; a missing concept is ``None`` for ``get``, not an error."""
    if type(sink) is Group:
        sink.put(slot, ok, value)  # type: ignore[arg-type]
    elif sink.done():  # type: ignore[union-attr]
        return  # cancelled by its caller
    elif ok:
        sink.set_result(value)  # type: ignore[union-attr]
    elif slot == "get" and isinstance(value, NotFound):
        sink.set_result(None)  # type: ignore[union-attr]
    else:
        sink.set_exception(value)  # type: ignore[union-attr]


class Connection(asyncio.Protocol):
    """One connection of one event loop: opens (and authenticates) at once, sends batches
    of calls, delivers their answers, fails every call still waiting when it ends (the
    client then opens a new one for the next call; nothing is retried)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: Settings) -> None:
        self.loop = loop
        self.settings = settings
        self.wire = Wire()
        self.transport: Optional[asyncio.Transport] = None
        self.ready = False  # connected and authenticated: batches go out at once
        self.ended: Optional[BaseException] = None  # why the connection is over, once it is
        # Sent calls by request id, oldest first, with the time their answer is due by.
        self.waiting: Dict[int, Tuple[Sink, Slot, float]] = {}
        # Batches not sent yet: the connection is opening, or max_in_flight calls are waiting.
        self.queued: Deque[Tuple[List[Tuple[str, Tuple[Any, ...]]], List[Sink], List[Slot]]] = (
            deque()
        )
        self.timer: Optional[asyncio.TimerHandle] = None
        self.opening = loop.create_task(self._open())

    def submit(
        self, calls: List[Tuple[str, Tuple[Any, ...]]], sinks: List[Sink], slots: List[Slot]
    ) -> None:
        """Sends calls ``[(name, args), ...]``, or queues them until the connection is open
        and fewer than ``max_in_flight`` calls are waiting; answers go to ``sinks``."""
        if self.ended is not None:
            for sink, slot in zip(sinks, slots):
                settle(sink, slot, False, again(self.ended))
        elif self.ready and not self.queued and len(self.waiting) < self.settings.max_in_flight:
            self._send(calls, sinks, slots)
        else:
            self.queued.append((calls, sinks, slots))

    def close(self) -> None:
        self._end(_make("closed", 0, "", "connection closed"))

    def _send(
        self, calls: List[Tuple[str, Tuple[Any, ...]]], sinks: List[Sink], slots: List[Slot]
    ) -> None:
        data, ids = self.wire.encode(calls)
        due = self.loop.time() + self.settings.timeout
        waiting = self.waiting
        for request_id, sink, slot in zip(ids, sinks, slots):
            if type(request_id) is int:
                waiting[request_id] = (sink, slot, due)
            else:  # its arguments were refused: nothing of it was encoded
                settle(sink, slot, False, request_id)
        if data:
            assert self.transport is not None
            self.transport.write(data)
            if self.timer is None:
                self.timer = self.loop.call_at(due, self._expire)

    def _send_queued(self) -> None:
        while self.queued and len(self.waiting) < self.settings.max_in_flight:
            self._send(*self.queued.popleft())

    def _expire(self) -> None:
        """Fails the calls past their time (the oldest are first in ``waiting``), then waits
        for the next one's."""
        self.timer = None
        now = self.loop.time()
        expired = []
        for request_id, (_, _, due) in self.waiting.items():
            if due > now:
                self.timer = self.loop.call_at(due, self._expire)
                break
            expired.append(request_id)
        for request_id in expired:
            sink, slot, _ = self.waiting.pop(request_id)
            settle(sink, slot, False, _make("timeout", 0, "", "request timed out"))
        if self.ready:
            self._send_queued()

    async def _open(self) -> None:
        try:
            failure = await self._connect()
        except asyncio.CancelledError:  # the event loop is shutting down
            self._end(_make("closed", 0, "", "connection closed"))
            raise
        if failure is not None:
            self._end(failure)
        elif self.ended is None:
            self.ready = True
            self._send_queued()

    async def _connect(self) -> Optional[BaseException]:
        """Connects and authenticates: ``None``, or why it could not."""
        settings = self.settings
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: self, settings.host, settings.port),
                settings.connect_timeout,
            )
        except asyncio.TimeoutError:
            return _make("timeout", 0, "", f"connecting to {settings.address} timed out")
        except OSError as error:
            message = f"cannot connect to {settings.address}: {error.strerror or error}"
            return _make("connect", 0, "", message)
        except Exception as error:  # a bad host or port: still this connection's failure
            return _make("connect", 0, "", f"cannot connect to {settings.address}: {error}")
        if settings.auth_token is None or self.transport is None:
            return None
        data, request_id = self.wire.auth(settings.auth_token)
        answer: "asyncio.Future[Any]" = self.loop.create_future()
        self.waiting[request_id] = (answer, "auth", self.loop.time() + settings.timeout)
        self.transport.write(data)
        try:
            await asyncio.wait_for(answer, settings.timeout)
        except StorageError as error:
            return error
        except asyncio.TimeoutError:
            return _make("timeout", 0, "", "request timed out")
        return None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        answers, failure = self.wire.feed(data)
        pop = self.waiting.pop
        for request_id, ok, value in answers:
            entry = pop(request_id, None)
            if entry is None:  # it timed out
                continue
            sink = entry[0]
            if ok and type(sink) is Call:  # the common case, without a call of settle()
                if not sink.done():
                    sink.set_result(value)
            else:
                settle(sink, entry[1], ok, value)
        if failure is not None:
            self._end(failure)
        elif self.queued and self.ready:
            self._send_queued()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._end(_make("closed", 0, "", "connection closed"))

    def _end(self, error: BaseException) -> None:
        if self.ended is None:
            self.ended = error
        self.ready = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiting, self.waiting = self.waiting, {}
        for sink, slot, _ in waiting.values():
            settle(sink, slot, False, again(self.ended))
        while self.queued:
            _, sinks, slots = self.queued.popleft()
            for sink, slot in zip(sinks, slots):
                settle(sink, slot, False, again(self.ended))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
