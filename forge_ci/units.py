"""How forge-ci writes quantities for people: one helper, used by every verb.

JSON output keeps plain integers (bytes, seconds); only human text uses these.
"""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(n: float) -> str:
    """``0 B``, ``512 B``, ``1.5 KiB``, ``2.9 GiB``: binary units, one decimal."""
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in _UNITS:
        n /= 1024
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")
