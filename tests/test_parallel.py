"""Grids trained in several processes give the same rows as in one (`sslmed.protocols.run_grid(jobs=...)`); the module entry points dispatch."""
import shutil
from pathlib import Path
import pandas as pd
import torch
from sslmed.core import project_root
from sslmed.protocols import run_grid

ROOT = project_root(Path(__file__).parent)

def _root(tmp: Path) -> Path:
    "A project root of its own (its runs folder is fresh) with this checkout's recipes and library."
    for d in ("recipes", "sslmed"): shutil.copytree(ROOT / d, tmp / d, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp

def test_grid_in_two_processes_equals_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLMED_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)  # the workers' share of 2 cores: the same kernels in both runs
    kw = dict(domains=["ecg", "angio"], methods=["lejepa", "random"], seeds=[0], profile="smoke", probes=("linear",),
              overrides={"steps": 3, "batch_size": 8, "data.n": 32})
    one = run_grid(**kw, root=_root(tmp_path / "a"), jobs=1)
    two = run_grid(**kw, root=_root(tmp_path / "b"), jobs=2)
    assert len(one) == len(two) > 0
    assert list(one.method) == list(two.method) and list(one.domain) == list(two.domain)   # rows in cell order
    cols = ["auroc", "accuracy", "f1"]
    pd.testing.assert_frame_equal(one[cols].reset_index(drop=True), two[cols].reset_index(drop=True), atol=1e-6, rtol=0)
    assert all(Path(r).is_relative_to(tmp_path / "b") for r in two.run)                      # each root trained its own

def test_module_entry_points_dispatch(tmp_path):
    "`python -m sslmed.cli` and `python -m sslmed` are the `sslmed` command: usage without arguments, never a paper run."
    import subprocess, sys
    for mod in ("sslmed.cli", "sslmed"):
        r = subprocess.run([sys.executable, "-m", mod], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stdout.startswith("usage: sslmed <command>"), (mod, r.stdout[-300:], r.stderr[-300:])
        assert "status  time(s)" not in r.stdout  # the summary table a paper run prints
    r = subprocess.run([sys.executable, "-m", "sslmed", "list"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "main_results" in r.stdout.split()
