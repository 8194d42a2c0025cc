"""Wrap-aware arithmetic on 16-bit sequence numbers (RFC 1982 serial numbers)."""

from __future__ import annotations

__all__ = ["SEQ_MODULUS", "seq_add", "seq_diff", "seq_newer"]

SEQ_MODULUS = 1 << 16
_HALF = SEQ_MODULUS >> 1
_MASK = SEQ_MODULUS - 1


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in [-32768, 32767], counting across the wrap."""
    return ((a - b + _HALF) & _MASK) - _HALF


def seq_newer(a: int, b: int) -> bool:
    """True if ``a`` comes after ``b``."""
    return seq_diff(a, b) > 0


def seq_add(a: int, n: int) -> int:
    """``a + n`` wrapped to 16 bits."""
    return (a + n) & _MASK
