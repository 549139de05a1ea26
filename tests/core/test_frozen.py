"""The frozen app, tested only when asked: the default run builds nothing and does not collect
these (tests/conftest.py).

Build first (packaging/build_frozen.py, minutes), then name what to test:

    KDSTUDIO_FROZEN=dist/kdstudio KDSTUDIO_APPIMAGE=dist/KD_Studio-x86_64.AppImage \\
        python -m pytest tests/core/test_frozen.py

Each program runs bare, as on a machine without KD Studio's Python: a fresh HOME, the system's
own PATH, no PYTHONPATH or virtual environment, Qt's offscreen platform.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

FOLDER = os.environ.get("KDSTUDIO_FROZEN")
APPIMAGE = os.environ.get("KDSTUDIO_APPIMAGE")
pytestmark = pytest.mark.slow


def _build_frozen():
    spec = importlib.util.spec_from_file_location("build_frozen", ROOT / "packaging" / "build_frozen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _program() -> Path:
    if not FOLDER:
        pytest.skip("set KDSTUDIO_FROZEN to a folder built by packaging/build_frozen.py")
    program = Path(FOLDER).resolve() / "kdstudio"
    assert program.is_file(), program
    return program


def _appimage() -> list[str]:
    if not APPIMAGE:
        pytest.skip("set KDSTUDIO_APPIMAGE to an AppImage built by build_frozen.py --appimage")
    image = Path(APPIMAGE).resolve()
    assert image.is_file(), image
    fuse = Path("/dev/fuse").exists() and shutil.which("fusermount3", path="/usr/bin:/bin")
    return [str(image)] if fuse else [str(image), "--appimage-extract-and-run"]


def test_no_file_of_the_folder_reaches_2_gib():
    total, too_big = _build_frozen().check_sizes(_program().parent)
    assert too_big == [] and total > 100 * 1024**2


def test_the_folder_opens_the_window_without_python():
    (seconds,) = _build_frozen().time_to_window([str(_program())], runs=1)
    assert 0 < seconds < 30


def test_the_folder_runs_the_demo_in_the_terminal():
    with tempfile.TemporaryDirectory() as home:
        env = {"HOME": home, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        out = subprocess.run([str(_program()), "demo", "--steps", "3"], env=env, cwd=home,
                             capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "KD Studio demo" in out.stdout


def test_the_folder_exports_to_onnx_int8_without_pip():
    """The export extra is inside the build: a frozen app has no pip to add it later."""
    with tempfile.TemporaryDirectory() as home:
        env = {"HOME": home, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
               "KDSTUDIO_HOME": str(Path(home) / "kd")}
        run = subprocess.run([str(_program()), "demo", "--steps", "2"], env=env, cwd=home,
                             capture_output=True, text=True, timeout=600, check=False)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        (folder,) = [p for p in (Path(home) / "kd" / "runs").iterdir() if p.is_dir()]
        out = subprocess.run([str(_program()), "export", str(folder), "--format", "onnx",
                              "--quantize", "int8"], env=env, cwd=home, capture_output=True,
                             text=True, timeout=600, check=False)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert (folder / "exports" / "onnx-int8" / "model.onnx").is_file()


def test_the_appimage_opens_the_window_without_python():
    image = _appimage()
    assert Path(image[0]).stat().st_size < 2 * 1024**3
    (seconds,) = _build_frozen().time_to_window(image, runs=1, limit=300)
    assert seconds > 0
