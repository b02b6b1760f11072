"""The library is a package: after `pip install -e .` (tools/install.sh) every module imports in a fresh
interpreter with no PYTHONPATH and from any working directory, and no script edits sys.path."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _modules():
    for path in sorted((REPO / "mt2kd_lib").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_imports_without_pythonpath(tmp_path):
    modules = list(_modules())
    assert len(modules) > 50
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nprint('ok', len(sys.argv) - 1)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code, *modules], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"ok {len(modules)}"


def test_no_sys_path_edits_in_scripts():
    offenders = [str(p.relative_to(REPO)) for d in ("local", "tools", "tests") for p in (REPO / d).glob("*.py")
                 if p.name != Path(__file__).name and re.search(r"sys\.path\.(insert|append)", p.read_text())]
    assert offenders == [], f"scripts that edit sys.path: {offenders}"
