"""The exceptions of the client: one base class, one subclass per protocol error code.

Every exception the client raises derives from :class:`StorageError`. A server error is
raised as the subclass named after its code (``Busy``, ``DimensionMismatch``, ...) with the
server's message; :class:`ConnectionFailed`, :class:`ConnectionClosed` and :class:`Timeout`
are the client's own (they also derive from Python's ``ConnectionError`` and
``TimeoutError``), and a request the client refuses to send (a bad id, a non-finite
embedding value) is :class:`InvalidArgument`, which is also a ``ValueError``.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class StorageError(Exception):
    """Base class of every error of this client.

    ``code`` is the protocol error code (``None`` for the client's own errors) and ``name``
    its name in PROTOCOL.md.
    """

    code: Optional[int] = None
    name: Optional[str] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServerError(StorageError):
    """The server answered with an error code (a subclass names which)."""


class MalformedFrame(ServerError):
    code, name = 1, "MalformedFrame"


class FrameTooLarge(ServerError):
    code, name = 2, "FrameTooLarge"


class UnsupportedVersion(ServerError):
    code, name = 3, "UnsupportedVersion"


class UnknownOpcode(ServerError):
    code, name = 4, "UnknownOpcode"


class InvalidArgument(ServerError, ValueError):
    """A field is invalid (also raised before sending, for a request that cannot be valid)."""

    code, name = 5, "InvalidArgument"


class DimensionMismatch(ServerError, ValueError):
    """The embedding's length differs from the server's VECTOR_DIMENSION."""

    code, name = 6, "DimensionMismatch"


class NotFound(ServerError, KeyError):
    """No concept with that id (only where ``None`` is not the answer)."""

    code, name = 7, "NotFound"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class Busy(ServerError):
    """A server limit was reached (connections, queues, shutting down); retry later."""

    code, name = 8, "Busy"


class InternalError(ServerError):
    """The server failed; its log has the details."""

    code, name = 9, "Internal"


class StorageUnavailable(ServerError):
    """The write could not be made durable (full disk, I/O error) and was not applied."""

    code, name = 10, "StorageUnavailable"


class Full(ServerError):
    """MAX_CONCEPTS is reached and EVICTION_POLICY is none."""

    code, name = 11, "Full"


class NoModel(ServerError):
    """A learn request reached a server without an embedding model."""

    code, name = 12, "NoModel"


class Unauthenticated(ServerError):
    """The server requires SUTRA_AUTH_TOKEN and the token is missing or wrong."""

    code, name = 13, "Unauthenticated"


class ConnectionFailed(StorageError, ConnectionError):
    """The TCP connection could not be opened."""


class ConnectionClosed(StorageError, ConnectionError):
    """The connection closed before the answer came; the request may have been applied.

    The next call opens a new connection.
    """


class Timeout(StorageError, TimeoutError):
    """No answer (or no connection) within the client's timeout."""


class ProtocolError(StorageError):
    """The server sent something this client cannot read."""


BY_CODE: Dict[int, Type[ServerError]] = {
    cls.code: cls  # type: ignore[misc]
    for cls in (
        MalformedFrame,
        FrameTooLarge,
        UnsupportedVersion,
        UnknownOpcode,
        InvalidArgument,
        DimensionMismatch,
        NotFound,
        Busy,
        InternalError,
        StorageUnavailable,
        Full,
        NoModel,
        Unauthenticated,
    )
}

_BY_KIND: Dict[str, Type[StorageError]] = {
    "connect": ConnectionFailed,
    "timeout": Timeout,
    "closed": ConnectionClosed,
    "invalid": InvalidArgument,
    "protocol": ProtocolError,
}


def _make(kind: str, code: int, name: str, message: str) -> StorageError:
    """The exception for a failure reported by the native client."""
    if kind == "server":
        cls: Type[StorageError] = BY_CODE.get(code, ServerError)
        error = cls(message)
        if cls is ServerError:  # a code newer than this client
            error.code, error.name = code, name
        return error
    return _BY_KIND.get(kind, ProtocolError)(message)
