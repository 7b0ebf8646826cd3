"""Argument checks shared by the modules: one clear ValueError naming the value."""

from __future__ import annotations


def positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is an int > 0 (not a bool); else raise ValueError naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def even_int(value: object, name: str) -> int:
    """Return ``value`` if it is a positive even int; else raise ValueError naming it."""
    positive_int(value, name)
    if value % 2:
        raise ValueError(f"{name} must be even (sin/cos or rotation pairs), got {value}")
    return value
