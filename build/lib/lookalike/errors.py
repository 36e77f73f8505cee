"""The one root error type. Its message is for the user, as is; its kind says what
went wrong, and each face maps the kind (never the text) to its answer: the API to
an HTTP status, the CLI to an exit code.

It lives at the bottom of the package so every layer (images, store, index,
engine) can raise it without importing anything above itself.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    BAD_INPUT = "bad_input"  # the request or argument cannot be used as given
    INVALID = "invalid"  # well-formed but unusable content: a corrupt photo, too many pixels
    UNSUPPORTED_MEDIA = "unsupported_media"  # not an image at all
    TOO_LARGE = "too_large"  # over a byte limit
    NOT_FOUND = "not_found"
    EXISTS = "exists"
    CONFLICT = "conflict"  # the catalogue's state forbids it (the last photo of a lot)
    UNAUTHORIZED = "unauthorized"  # no valid credentials
    FORBIDDEN = "forbidden"  # the operation is switched off
    UNAVAILABLE = "unavailable"  # a store, index server or model cannot be reached right now


class LookalikeError(RuntimeError):
    """An error whose message is meant for the user, as is."""

    default_kind = ErrorKind.BAD_INPUT

    def __init__(self, message: str, kind: ErrorKind | None = None):
        super().__init__(message)
        self.kind = kind or self.default_kind


class NotFoundError(LookalikeError):
    default_kind = ErrorKind.NOT_FOUND


class ExistsError(LookalikeError):
    default_kind = ErrorKind.EXISTS


__all__ = ["ErrorKind", "ExistsError", "LookalikeError", "NotFoundError"]
