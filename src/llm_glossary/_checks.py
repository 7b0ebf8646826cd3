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


def finite_number(value: object, name: str, *, minimum: float = 0.0, strict: bool = True) -> float:
    """Return ``value`` if it is a finite real number (not a bool) above ``minimum``.

    ``strict`` requires ``value > minimum``; otherwise ``value >= minimum``.
    """
    import math
    import numbers

    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number {bound}, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or not (value > minimum if strict else value >= minimum):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return value
