"""Byte sizes as people write them: 500MB, 5GB (decimal, as Hugging Face), 5GiB, 1.5G, 1000000.

One parser for every call that takes a size (`reshard_by_size`, `upcast(max_shard_size=)`,
the CLI's SIZE options), so "5GB" means the same thing everywhere.
"""

from __future__ import annotations

import re

from .errors import ArgumentError

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}

Size = int | str


def parse_size(size: Size, *, argument: str = "size") -> int:
    """Bytes from an int or a string like '500MB', '5GB', '5GiB', '1.5G' or '1000000'.

    Raises:
        ArgumentError: not a size, or not positive (the message names `argument`).
    """
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise ArgumentError(f"{argument}={size!r}: expected bytes as an int or a string like "
                            f"'500MB', '5GB' or '5GiB'")
    if isinstance(size, int):
        value = size
    else:
        m = _SIZE.fullmatch(size)
        if not m:
            raise ArgumentError(f"{argument}={size!r} is not a size like 500MB, 5GB or 5GiB")
        unit = (m[2] or "").lower().removesuffix("b")
        value = round(float(m[1]) * _UNITS[unit])
    if value <= 0:
        raise ArgumentError(f"{argument}={size!r}: the size must be positive")
    return value
