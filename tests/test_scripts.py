"""Every benchmark and experiment script starts and explains itself: an import that no longer exists fails here,
not when someone first runs ``make bench`` or ``make experiments``."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted(str(p) for folder in ("benchmarks", "experiments") for p in Path(folder).glob("*.py")
                 if p.name not in ("common.py", "random_backbone.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help(script):
    result = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
