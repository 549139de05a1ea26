"""The package's layers: the import-linter contracts in pyproject.toml hold, and the light
modules (config, tasks, the command line's parser) import without torch."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _lint_imports() -> list[str]:
    """The lint-imports command of the interpreter running the tests."""
    exe = Path(sys.executable).with_name("lint-imports")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                                  "sys.argv[0] = 'lint-imports'; lint_imports_command()"]


def test_the_import_contracts_are_kept():
    pytest.importorskip("importlinter")
    from importlinter.api import read_configuration

    contracts = read_configuration(str(ROOT / "pyproject.toml"))["contracts_options"]
    ids = {c["id"] for c in contracts}
    assert {"core-without-qt", "layers", "one-way", "core-one-way", "core-layers"} <= ids
    # No contract waives an import: a circle is fixed by layering, never by an ignore.
    assert [c["id"] for c in contracts if c.get("ignore_imports")] == []
    out = subprocess.run(_lint_imports() + ["--no-cache", "--no-logo"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    for c in contracts:
        assert f"{c['name']} KEPT" in report, report
    assert f"{len(contracts)} kept, 0 broken" in report, report


def test_no_import_circle_even_counting_imports_inside_functions():
    """grimp (import-linter's graph) counts an import inside a function like one at module
    level; the engine's modules then form no circle at all."""
    pytest.importorskip("grimp")
    import grimp

    graph = grimp.build_graph("kdstudio", cache_dir=None, exclude_type_checking_imports=True)
    core = sorted(m for m in graph.modules if m.startswith("kdstudio.core."))
    circles = [(a, b) for a in core for b in core if a < b
               and graph.chain_exists(importer=a, imported=b, as_packages=False)
               and graph.chain_exists(importer=b, imported=a, as_packages=False)]
    assert circles == []


@pytest.mark.parametrize("module", ["kdstudio.core.config", "kdstudio.core.tasks", "kdstudio.cli",
                                    "kdstudio.core.objective", "kdstudio.core.term"])
def test_light_modules_import_without_torch_or_qt(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('torch', 'transformers', 'PySide6') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]", f"{module} imports {out.stdout.strip()}"
