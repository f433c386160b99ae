import os, shutil
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture
def repo_copy(tmp_path):
    "A throwaway copy of what `sslmed paper` reads, so tests never write into the checkout."
    for d in ("nbs", "data_cards", "benchmarks/results"):
        if (ROOT / d).exists(): shutil.copytree(ROOT / d, tmp_path / d)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path

def _in_ci(config=None) -> bool:
    "CI (env CI=1, or SSLMED_REQUIRE_SLURM=1 from .ci/run) must never skip a SLURM test."
    return os.environ.get("CI", "") not in ("", "0", "false") or os.environ.get("SSLMED_REQUIRE_SLURM") == "1"

@pytest.fixture(scope="session")
def slurm():
    "A live one-node SLURM (brought up by .ci/slurm-up); skips, saying why, only where it cannot be had outside CI."
    import subprocess
    r = subprocess.run([str(ROOT / ".ci" / "slurm-up")], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        why = f".ci/slurm-up failed (rc {r.returncode}): {(r.stderr or r.stdout).strip()[-800:]}"
        if _in_ci(): pytest.fail(why)
        print(why); pytest.skip(why)
    return shutil.which("sbatch")

def pytest_collection_modifyitems(config, items):
    "Every test whose name says `slurm` gets the live cluster, so `pytest -k slurm` selects exactly those."
    for it in items:
        if "slurm" in it.nodeid.lower() and "slurm" not in getattr(it, "fixturenames", ()): it.fixturenames.insert(0, "slurm")
