"""An ASGI wrapper that enforces the upload size while the body streams in."""

from __future__ import annotations

import json


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
