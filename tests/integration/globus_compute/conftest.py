"""The Globus Compute stand-in's fixture (tests/gc_standin.py)."""

from gc_standin import gc

__all__ = ["gc"]
