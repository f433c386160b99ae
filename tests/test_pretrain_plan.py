"""`sslmed paper` trains every run its notebooks will use first, in one pool, longest first; the notebooks then train nothing."""
import json, os, shutil, subprocess, sys
from conftest import ROOT

SCRIPT = r"""
import json, sys
from pathlib import Path
from sslmed.paper import pretrain_plan, experiment_params
from sslmed.executors import distinct_runs
from sslmed.protocols import is_finished
root = Path.cwd()
names = ["lambda_sweep"]
errors = pretrain_plan("smoke", names, root)
runs = distinct_runs("smoke", experiment_params("smoke", root, only=names), root)
mtimes = {r: (root / r / "backbone.pt").stat().st_mtime_ns for r in runs.run if (root / r / "backbone.pt").is_file()}
print(json.dumps(dict(errors=errors, n=len(runs), finished=[is_finished(root / r, c) for r, c in zip(runs.run, runs.cfg)],
                      again=pretrain_plan("smoke", names, root),
                      same=all((root / r / "backbone.pt").stat().st_mtime_ns == t for r, t in mtimes.items()))))
"""

def run(cwd, jobs: str):
    if not (cwd / "recipes").exists(): shutil.copytree(ROOT / "recipes", cwd / "recipes")
    env = {**os.environ, "SSLMED_JOBS": jobs, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "SSLMED_EXECUTOR": "local"}
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout, json.loads(r.stdout.strip().splitlines()[-1])

def test_every_run_trained_once_before_the_notebooks(repo_copy):
    out, res = run(repo_copy, "2")
    assert res["n"] > 2 and len(res["errors"]) == res["n"] and not any(res["errors"]), res
    assert all(res["finished"]), res                           # every run the notebook asks for is finished
    assert len(res["again"]) == res["n"] and res["same"], res  # a second pass finds them all and rewrites none
    assert f"training {res['n']} runs of 1 notebook(s) first, longest first" in out

def test_one_process_leaves_training_to_the_notebooks(repo_copy):
    _, res = run(repo_copy, "1")
    assert res["errors"] == [] and not any(res["finished"]), res
