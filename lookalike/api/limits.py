"""An ASGI wrapper that enforces the upload size while the body streams in."""

from __future__ import annotations

import asyncio
import json
import time


async def send_json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


class BodySizeLimit:
    """Answers 413 as soon as a request declares or sends more than ``max_bytes``;
    the application then sees a disconnect and its own response is dropped."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = {"error": f"the request body is over the {self.max_bytes // (1024 * 1024)} MB limit"}
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await send_json(send, 413, message)
        received = 0
        state = {"started": False, "answered": False}

        async def limited_receive():
            nonlocal received
            incoming = await receive()
            if incoming["type"] == "http.request":
                received += len(incoming.get("body", b""))
                if received > self.max_bytes:
                    if not state["started"] and not state["answered"]:
                        state["answered"] = True
                        await send_json(send, 413, message)
                    return {"type": "http.disconnect"}
            return incoming

        async def guarded_send(outgoing):
            if state["answered"]:
                return
            if outgoing["type"] == "http.response.start":
                state["started"] = True
            await send(outgoing)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["answered"]:
                raise


class Busy(Exception):
    """The server's embedding work is full: answer 503 with Retry-After, at once."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy; try again in {retry_after} s")
        self.retry_after = retry_after


class Admission:
    """Bounded embedding work: at most ``workers`` requests embed at once and ``queue`` more wait their turn; a
    request beyond that is refused at once (``Busy``) instead of queueing for seconds behind the others.

    Only the event loop touches the counters, so no lock is needed. ``Retry-After`` is the time the work ahead
    would take at the recent pace, at least a second."""

    def __init__(self, workers: int, queue: int, on_wait=None, on_reject=None):
        if workers < 1 or queue < 0:
            raise ValueError("searches in parallel must be at least 1 and the queue at least 0")
        self.workers, self.queue = workers, queue
        self.slots = asyncio.Semaphore(workers)
        self.admitted = 0  # running or waiting
        self.running = 0
        self.recent_seconds = 1.0
        self.on_wait, self.on_reject = on_wait, on_reject

    @property
    def waiting(self) -> int:
        return self.admitted - self.running

    async def run(self, work):
        """Await ``work()`` (a coroutine function) when a slot is free; raises Busy when the queue is full."""
        if self.admitted >= self.workers + self.queue:
            if self.on_reject:
                self.on_reject()
            ahead = (self.admitted - self.workers + 1) / self.workers
            raise Busy(max(1, round(ahead * self.recent_seconds + 0.5)))
        self.admitted += 1
        queued = time.perf_counter()
        try:
            async with self.slots:
                started = time.perf_counter()
                if self.on_wait:
                    self.on_wait(started - queued)
                self.running += 1
                try:
                    return await work()
                finally:
                    self.running -= 1
                    self.recent_seconds = 0.8 * self.recent_seconds + 0.2 * (time.perf_counter() - started)
        finally:
            self.admitted -= 1
