"""The REST API and web page (FastAPI), a face over the engine."""

from lookalike.api.app import create_app

__all__ = ["create_app"]
