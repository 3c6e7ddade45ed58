"""Which loops run the formats' hot paths: numba-compiled kernels, or NumPy.

The NumPy path is the fallback and the oracle: both give the same bytes on every format
(tests/test_kernels.py). `CKPT_KERNELS` chooses:
- "auto" (default): compiled for arrays of at least `MIN_COMPILED_ELEMENTS` elements when
  numba is importable, NumPy otherwise: a tiny tensor is not worth numba's import (0.3 s)
  and cache load, and commands that convert nothing never import it;
- "compiled": compiled for every array (an error when numba is missing);
- "numpy": NumPy only.
The compiled module (`compiled.py`) is imported on first use; its kernels are compiled on
their first call and cached on disk (numba `cache=True`), so only a machine's first run
pays the compilation.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

from ..errors import ArgumentError, MissingDependencyError

ENV = "CKPT_KERNELS"
CHOICES = ("auto", "compiled", "numpy")
MIN_COMPILED_ELEMENTS = 1 << 16
# What the NumPy fallback leaves on the table, measured by bench/kernels.py (README).
SPEED_NOTE = ("numba is not installed, so FP8/MXFP4 dequantisation and quantisation run "
              "on the NumPy fallback, 2 to 4x slower per element (pip install numba)")

_module: ModuleType | None = None
_missing = False


def choice() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ArgumentError(f"{ENV}={value!r}: expected one of {', '.join(CHOICES)}")
    return value


def _load() -> ModuleType | None:
    global _module, _missing
    if _module is None and not _missing:
        try:
            from . import compiled
        except ImportError:  # numba absent (or broken for this numpy): the fallback
            _missing = True
        else:
            _module = compiled
    return _module


def compiled_for(numel: int) -> ModuleType | None:
    """The compiled kernels to use for an array of `numel` elements, or None for NumPy."""
    wanted = choice()
    if wanted == "numpy" or (wanted == "auto" and numel < MIN_COMPILED_ELEMENTS):
        return None
    module = _load()
    if module is None:
        if wanted == "compiled":
            raise MissingDependencyError(f"{ENV}=compiled: {SPEED_NOTE}")
        warnings.warn(SPEED_NOTE, RuntimeWarning, stacklevel=3)
    return module
