"""Fixtures: real sutra-storage processes on 127.0.0.1 (ephemeral ports, temporary data
directories).

The binary is ``$SUTRA_STORAGE_BIN``, else the workspace's ``target/debug/sutra-storage`` or
``target/release/sutra-storage`` (``cargo build -p sutra-server`` makes it; ``./scripts/test``
builds it before it runs these tests).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "all-MiniLM-L6-v2"


def _binary() -> Path:
    explicit = os.environ.get("SUTRA_STORAGE_BIN")
    if explicit:
        return Path(explicit)
    for profile in ("debug", "release"):
        candidate = REPO / "target" / profile / "sutra-storage"
        if candidate.exists():
            return candidate
    raise RuntimeError(
        "no sutra-storage binary: run `cargo build -p sutra-server` or set SUTRA_STORAGE_BIN"
    )


class Server:
    """One sutra-storage process; ``restart()`` keeps its port and data directory."""

    def __init__(self, data_dir: Path, env: Dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = env
        self.port = 0
        self.process: Optional[subprocess.Popen[str]] = None
        self.log: List[str] = []
        self.start()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", ""),
            # No per-user model directory: only SUTRA_MODEL_DIR gives a server a model.
            "HOME": str(self.data_dir.parent),
            "XDG_DATA_HOME": str(self.data_dir.parent / "xdg"),
            "RUST_LOG": "info",
            "STORAGE_HOST": "127.0.0.1",
            "STORAGE_PORT": str(self.port),
            "STORAGE_PATH": str(self.data_dir),
            "WAL_FSYNC": "never",
            **self.env,
        }
        self.process = subprocess.Popen(
            [str(_binary())],
            env=env,
            cwd=self.data_dir.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        deadline = time.monotonic() + 60
        for line in self.process.stderr:
            self.log.append(line)
            found = re.search(r"addr=127\.0\.0\.1:(\d+)", line)
            if "listening" in line and found:
                self.port = int(found.group(1))
                break
            if time.monotonic() > deadline:
                break
        else:
            raise RuntimeError("sutra-storage exited during start-up:\n" + "".join(self.log))
        stderr = self.process.stderr
        threading.Thread(target=lambda: [self.log.append(line) for line in stderr],
                         daemon=True).start()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP, returning once the process is stopped."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self.process.pid}/stat")
        deadline = time.monotonic() + 5
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
            assert time.monotonic() < deadline, "the server did not stop"
            time.sleep(0.01)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def _server(tmp_path_factory: pytest.TempPathFactory, **env: str) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("sutra")
    server = Server(root / "data", env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A normal server, 256-dimensional vectors, no model."""
    yield from _server(tmp_path_factory)


@pytest.fixture
def shard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A cache shard (SUTRA_ROLE=cache_shard)."""
    yield from _server(tmp_path_factory, SUTRA_ROLE="cache_shard")


@pytest.fixture
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that requires the token ``s3cret``."""
    yield from _server(tmp_path_factory, SUTRA_AUTH_TOKEN="s3cret")


@pytest.fixture(scope="module")
def learner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the default model (./scripts/fetch-model)."""
    if not (MODEL / "model.safetensors").exists():
        pytest.fail(f"the default model is missing at {MODEL}: run ./scripts/fetch-model")
    yield from _server(tmp_path_factory, SUTRA_MODEL_DIR=str(MODEL))
