"""Type stubs of the Rust half (see src/lib.rs); the package wraps it."""

from typing import Any, Callable, Dict, List, Optional, Tuple

ConceptTuple = Tuple[str, str, str, str, Dict[str, str], Optional[bytes], int, Optional[int]]
StoreItem = Tuple[str, str, str, str, Dict[str, str], Optional[bytes], Optional[int]]
LearnItem = Tuple[str, str, Dict[str, str], Optional[str], Optional[int]]
Callback = Optional[Callable[[bool, Any], None]]

PROTOCOL_ERRORS: List[Tuple[int, str]]

def shutdown() -> None: ...
def set_error_factory(factory: Callable[[str, int, str, str], BaseException]) -> None: ...

class Client:
    def __init__(
        self,
        addr: str,
        timeout: float,
        connect_timeout: float,
        auth_token: Optional[str] = None,
        max_in_flight: int = 4096,
        blocking: bool = False,
    ) -> None: ...
    @property
    def addr(self) -> str: ...
    def call(self, name: str, args: Tuple[Any, ...], callback: Callback = None) -> Any: ...
    def batch(
        self,
        calls: List[Tuple[str, Tuple[Any, ...]]],
        callback: Optional[Callable[[List[Tuple[bool, Any]]], None]] = None,
    ) -> Any: ...
