"""Local features and spatial verification: is this the very object, and where do the photos agree."""

from lookalike.matching.local_features import DEFAULT_KIND, KINDS, LocalFeatures, extract
from lookalike.matching.verify import DEFAULT_METHOD, METHODS, Verification, verify

__all__ = ["DEFAULT_KIND", "DEFAULT_METHOD", "KINDS", "METHODS", "LocalFeatures", "Verification", "extract", "verify"]
