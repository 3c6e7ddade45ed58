"""numba's fixed cost per process, cut to what the kernels need (issue 26).

Measured with cProfile (`python bench/numba_load.py` for the figure): a process calling
its first cached kernel paid about 1.4 s of CPU for numba, of which 0.6 to 1.0 s was
`load_overload` refreshing numba's target context before loading the machine code: it
imports and registers every typing and lowering registry (arrays, random, dicts, lists,
...; numba/core/cpu.py `load_additional_registries`), and with them scipy.linalg and
numpy.f2py for numba's BLAS probe (numba/np/arraymath.py `_check_blas`). Compiling needs
those registries; loading machine code that was compiled already needs only the runtime
(NRT, which the code calls to allocate) and the code generator. `load_cached` loads an
overload that way, through numba's own cache object and its own checks of the cache's
validity (source stamp, numba version, CPU), and leaves every other case (a cache miss,
a numba whose internals differ) to numba's ordinary path, which compiles and caches.
"""

from __future__ import annotations

from numba.core.compiler_lock import global_compiler_lock
from numba.core.runtime import rtsys


def load_cached(kernel, args: tuple) -> None:
    """Install `kernel`'s overload for `args` from numba's on-disk cache when it is there
    and not installed yet, without refreshing numba's registries (module docstring)."""
    try:
        sig = tuple(kernel.typeof_pyval(a) for a in args)
    except Exception:  # noqa: BLE001 - an argument numba cannot type: the call says why
        return
    cache = getattr(kernel, "_cache", None)
    if sig in kernel.overloads or cache is None:
        return
    with global_compiler_lock:
        if sig in kernel.overloads:
            return
        try:
            target = kernel.targetctx
            rtsys.initialize(target)
            cres = cache._load_overload(sig, target)
        except Exception:  # noqa: BLE001 - any surprise: numba's ordinary path decides
            return
        if cres is not None:
            kernel.add_overload(cres)
