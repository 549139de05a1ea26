"""Loading torch's shared libraries without holding the interpreter's lock.

Python loads an extension module's shared libraries holding the interpreter's lock: importing
torch on a background thread still froze the window for 180-380 ms while the dynamic loader
mapped and relocated libtorch. Called through ctypes, the loader runs with the lock released;
so, before the first ``import torch``, the same libraries are loaded that way, in the order and
with the flags torch's own ``__init__`` uses, and the import then finds them already loaded.

Linux only, and only where torch does not bring its CUDA libraries from other packages (there
torch picks their versions itself): anywhere else this does nothing and the import works as
before.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from pathlib import Path


def preload_torch() -> bool:
    """Load torch's libraries with the interpreter's lock released; True when it did."""
    if not sys.platform.startswith("linux") or "torch" in sys.modules:
        return False
    try:
        spec = importlib.util.find_spec("torch")  # finds the folder; imports nothing
        if spec is None or not spec.origin:
            return False
        folder = Path(spec.origin).parent
        global_deps = folder / "lib" / "libtorch_global_deps.so"
        extension = sorted(folder.glob("_C.*.so"))
        if not global_deps.exists() or len(extension) != 1:
            return False
        libc = ctypes.CDLL(None)
        dlopen = libc.dlopen
        dlopen.restype, dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
        # torch/__init__.py: ctypes.CDLL(libtorch_global_deps, mode=RTLD_GLOBAL) ...
        if not dlopen(os.fsencode(global_deps), os.RTLD_GLOBAL | os.RTLD_NOW):
            return False
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            if "libcudart" in maps.read():
                return False  # ... then its CUDA libraries, which it finds itself
        # ... then torch._C, as Python loads an extension module.
        return bool(dlopen(os.fsencode(extension[0]), sys.getdlopenflags()))
    except (OSError, AttributeError, ValueError):
        return False
