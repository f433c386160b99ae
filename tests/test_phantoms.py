"""The `slow` cells of the domain notebooks: a 3D CNN learns the neuro phantom's findings from smoke-size volumes (a few minutes)."""
import os, subprocess, sys
from pathlib import Path
from conftest import ROOT

def test_phantom_slow_cells_pass():
    nbdev_test = Path(sys.executable).parent / "nbdev-test"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("SSLMED_SLOW_THREADS", "2")}  # CI has 2 cores: use both here
    out = subprocess.run([str(nbdev_test), "--flags", "slow", "--cell-timeout", "1800", str(ROOT / "nbs/domains/14_neuro.ipynb")],
                         cwd=ROOT, capture_output=True, text=True, timeout=2400, env=env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
