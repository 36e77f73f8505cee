"""A real Milvus 2.3.5 standalone server on 127.0.0.1 for the tests (PyPI `milvus`: the embedded Milvus
server, a real Milvus binary with embedded etcd and local storage; 2.3.5 is its last Linux x86-64 wheel).

Learned starting it here: every component advertises the machine's first non-loopback address unless its `ip`
is set; the default graceful stop of 1800 s makes SIGTERM hang; a start on the data of a killed server waits for
the dead sessions to expire (a minute or more), so each start here gets a fresh data folder; the package takes
a lock at /run/milvus/standalone.pid, so one server runs at a time on a machine."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bound(port: int) -> socket.socket | None:
    """A listening socket on the port, or None. SO_REUSEADDR, as the Milvus binary binds: connections a stopped
    server closed linger in TIME_WAIT for a minute, and without it a restart could not take its port back."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None


def _can_bind(port: int) -> bool:
    sock = _bound(port)
    if sock:
        sock.close()
    return sock is not None


class MilvusStandalone:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.port = _free_port()
        self.starts = 0
        self._server = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, fresh: bool = True) -> None:
        """Start the server, on fresh data or (``fresh=False``, after ``stop``) on the data it had."""
        try:
            from milvus import MilvusServer, MilvusServerConfig
        except ImportError:
            raise RuntimeError("the Milvus server tests need PyPI milvus==2.3.5 (make test installs it)") from None
        self.starts += 1 if fresh or not self.starts else 0
        if not _can_bind(self.port):  # a killed server's connections can hold its port for a while
            self.port = _free_port()
        class Config(MilvusServerConfig):
            def try_bind_port(self, port):  # the package's own probe binds without SO_REUSEADDR
                return _bound(port)

        config = Config(data_dir=str(self.folder / f"data-{self.starts}"), proxy_port=self.port)
        for component in COMPONENTS:
            config.set(f"{component}.ip", "127.0.0.1")
        config.set("common.gracefulStopTimeout", 3)
        self._server = MilvusServer(config)
        self._server.start()  # waits for /healthz

    def kill(self) -> None:
        """kill -9, as a crash."""
        if self._server is not None and self._server.server_proc is not None:
            os.kill(self._server.server_proc.pid, signal.SIGKILL)
            self._server.server_proc.wait()
            self._server.server_proc = None
            self._server.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
