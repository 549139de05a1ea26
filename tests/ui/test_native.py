"""torch's shared libraries are loaded ahead of its import, once, and torch then works."""

import subprocess
import sys

import pytest

from kdstudio.ui.native import preload_torch

PROBE = """
import sys
from kdstudio.ui.native import preload_torch

def mapped():
    with open("/proc/self/maps") as f:
        return {line.split()[-1] for line in f if "libtorch_cpu" in line}

assert "torch" not in sys.modules and not mapped()
print("preloaded", preload_torch())
assert "torch" not in sys.modules  # the libraries only, not the module
before = mapped()
import torch
print("mapped before import", len(before), "after", len(mapped()), before == mapped())
print("sum", float(torch.arange(4.0).sum()))
"""


def test_nothing_happens_once_torch_is_imported():
    import torch  # noqa: F401

    assert preload_torch() is False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preload is Linux-only")
def test_the_libraries_are_loaded_before_the_import_and_torch_uses_them():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=300, check=True).stdout.splitlines()
    assert out[0] == "preloaded True"
    # The import found the one copy already loaded: the same file, no second one.
    assert out[1] == "mapped before import 1 after 1 True"
    assert out[2] == "sum 6.0"
