"""Small text helpers every face uses."""

from __future__ import annotations

CONTROL_CHARACTERS = {code: f"\\x{code:02x}" for code in [*range(32), 127]}


def one_line(text: str) -> str:
    """``text`` with control characters (newlines in hostile file names) escaped."""
    return text.translate(CONTROL_CHARACTERS)
