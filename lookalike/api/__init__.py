"""The REST API and web page (FastAPI), a face over the engine."""

from lookalike.api.app import ApiSettings, create_app

__all__ = ["ApiSettings", "create_app"]
