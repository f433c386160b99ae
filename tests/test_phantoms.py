"""The phantom notebook's `slow` cells: a 3D CNN learns the neuro findings from smoke-size volumes (about a minute)."""
import subprocess, sys
from pathlib import Path
from conftest import ROOT

def test_phantom_slow_cells_pass():
    nbdev_test = Path(sys.executable).parent / "nbdev-test"
    out = subprocess.run([str(nbdev_test), "--flags", "slow", str(ROOT / "nbs/04_phantoms.ipynb")],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
