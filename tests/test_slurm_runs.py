"""The trainer under a real one-node SLURM: a requeued job resumes bit for bit, `srun` tasks train as torchrun's, one run
owns its folder, and a run is reused exactly when what it trains is unchanged. `pytest -k slurm` selects these."""
import hashlib, os, re, shutil, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
# a tiny ECG LeJEPA on the phantom (as tests/test_train.py): seconds of compute per run
BASE = dict(domain="ecg", dataset="phantom", data=dict(n=64, fs=100), method="lejepa", encoder="vit1d_tiny",
            encoder_kw=dict(patch_size=25, depth=1), views=dict(crop=250, fs=100, n_global=2, n_local=1, local_crop=125),
            method_kw=dict(proj_hidden=32, proj_dim=16, num_slices=32, proj_norm="ln"), steps=24, batch_size=8,
            lr=1e-3, warmup_steps=2, log_every=1, ckpt_every=5, progress=False, seed=3)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}
TRAIN = f"exec {sys.executable} -m sslmed.train --config"

@pytest.fixture(scope="module")
def cluster():
    "This module's own check that SLURM answers (the session fixture of tests/conftest.py, where present, brings it up)."
    try: r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e: r = None; why = f"sinfo failed: {e}"
    else: why = f"sinfo exit {r.returncode}: {r.stderr.strip()[:300]}"
    if r is None or r.returncode != 0 or not r.stdout.strip():
        print(f"SLURM tests skipped: {why}")
        pytest.skip(f"no SLURM here ({why}); .ci/slurm-up brings one up")

def write_cfg(d: Path, name: str, **over) -> tuple[Path, Path]:
    cfg = {**BASE, "out_dir": str(d / name), **over}
    (d / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return d / f"{name}.yaml", d / name

def sbatch(d: Path, name: str, body: str, *opts) -> str:
    "Submit `body` as a batch script (log: <name>.log, appended across requeues); its job id."
    script = d / f"{name}.sh"
    script.write_text(f"#!/bin/bash\ncd {d}\n{body}\n")
    r = subprocess.run(["sbatch", "--parsable", f"--job-name=sslmed-{name}", f"--output={d / name}.log", "--open-mode=append",
                        "--cpus-per-task=1", *opts, str(script)], env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(";")[0]

def job(jid: str) -> dict:
    "`scontrol show job` as a mapping ({} once SLURM forgot the job)."
    r = subprocess.run(["scontrol", "-o", "show", "job", jid], capture_output=True, text=True, timeout=60)
    return dict(kv.split("=", 1) for kv in r.stdout.split() if "=" in kv) if r.returncode == 0 else {}

def wait_done(jid: str, timeout: float = 900, release: bool = True) -> dict:
    "Wait for a job to end; a requeued job pending on SLURM's requeue delay (BeginTime) is let start at once."
    t0 = time.time()
    while time.time() - t0 < timeout:
        j = job(jid)
        if j.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"): return j
        if release and j.get("JobState") == "PENDING" and j.get("Reason") == "BeginTime":
            subprocess.run(["scontrol", "update", f"jobid={jid}", "StartTime=now"], capture_output=True, timeout=60)
        time.sleep(1)
    subprocess.run(["scancel", jid], capture_output=True)
    raise AssertionError(f"job {jid} did not end in {timeout} s: {job(jid)}")

def wait_rows(csv: Path, rows: int, jid: str, timeout: float = 600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if csv.exists() and len(csv.read_text().splitlines()) > rows: return
        assert job(jid).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), f"job {jid} ended early: {job(jid)}"
        time.sleep(0.1)
    raise AssertionError(f"{csv} never reached {rows} rows")

def same_state(a, b, where="") -> list[str]:
    "Every difference between two checkpoints' contents: tensors bit for bit (`torch.equal` and dtype), the rest by `==`."
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return [] if isinstance(b, torch.Tensor) and isinstance(a, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b) else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        return ([f"{where}: keys {sorted(map(str, set(a) ^ set(b)))}"] if set(a) != set(b) else []) + \
               [d for k in a if k in b for d in same_state(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same_state(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]

def checkpoint(p: Path) -> dict:
    ck = torch.load(p, weights_only=True)
    if isinstance(ck, dict) and "config" in ck: ck["config"] = {k: v for k, v in ck["config"].items() if k not in ("out_dir", "resume")}
    if isinstance(ck, dict): ck.pop("slurm_job", None)  # which job wrote it: the one thing that must differ
    return ck

LOSSES = ["step", "loss", "inv", "sigreg", "lr", "grad_norm"]

@pytest.mark.parametrize("how", ["time-limit signal", "scontrol requeue"])
def test_slurm_requeued_run_ends_bitwise_equal_to_an_uninterrupted_one(tmp_path, cluster, how):
    ca, oa = write_cfg(tmp_path, "whole")
    cb, ob = write_cfg(tmp_path, "requeued")
    ja = sbatch(tmp_path, "whole", f"{TRAIN} {ca}")
    jb = sbatch(tmp_path, "requeued", f"{TRAIN} {cb}")
    wait_rows(ob / "metrics.csv", 7, jb)  # mid-training, between two checkpoints (ckpt_every=5)
    if how == "time-limit signal":  # what `sbatch --signal=B:USR1@120` sends 120 s before the time limit
        subprocess.run(["scancel", "--signal=USR1", "--batch", jb], check=True, timeout=60)
    else: subprocess.run(["scontrol", "requeue", jb], check=True, timeout=60)  # SIGTERM now, the job runs again later
    end_a, end_b = wait_done(ja), wait_done(jb)
    log = (tmp_path / "requeued.log").read_text()
    assert end_a["JobState"] == end_b["JobState"] == "COMPLETED", (end_a, end_b, log[-3000:])
    assert end_b["Restarts"] == "1", log[-3000:]
    stopped = re.search(r"stopped by (SIGUSR1|SIGTERM) after step (\d+)", log)
    assert stopped and 7 <= int(stopped[2]) < BASE["steps"], log[-3000:]
    if int(stopped[2]) % BASE["ckpt_every"] == 0: print(f"stopped on a checkpoint step ({stopped[2]})")
    assert f"resuming from step {stopped[2]}" in log, log[-3000:]
    # the final checkpoints: model, optimiser, scheduler, SWA, RNG states, step, best value, window and config (less out_dir)
    for f in ("last.pt", "best.pt", "backbone.pt"):
        diff = same_state(checkpoint(oa / f), checkpoint(ob / f))
        assert not diff, f"{f} differs at {diff[:10]} (stopped after step {stopped[2]})"
    pd.testing.assert_frame_equal(pd.read_csv(oa / "metrics.csv")[LOSSES], pd.read_csv(ob / "metrics.csv")[LOSSES], check_exact=True)

def test_slurm_srun_two_tasks_equal_one_process_with_the_whole_batch(tmp_path, cluster):
    c1, o1 = write_cfg(tmp_path, "single", steps=3, batch_size=16, views={**BASE["views"], "chunk": 8})
    c2, o2 = write_cfg(tmp_path, "srun", steps=3, batch_size=8)
    j1 = sbatch(tmp_path, "single", f"{TRAIN} {c1}")
    j2 = sbatch(tmp_path, "srun", f"srun {sys.executable} -m sslmed.train --config {c2}", "--ntasks=2")
    e1, e2 = wait_done(j1), wait_done(j2)
    assert e1["JobState"] == e2["JobState"] == "COMPLETED", (e1, e2, (tmp_path / "srun.log").read_text()[-3000:])
    a, b = (torch.load(o / "last.pt", weights_only=True) for o in (o1, o2))
    assert (a["world"], b["world"]) == (1, 2)  # the srun tasks really formed one process group of 2
    for k in a["model"]:  # the tolerance of test_train's torchrun test: gloo's all-reduce sums in another order
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
    assert pd.read_csv(o2 / "metrics.csv").step.tolist() == [1, 2, 3]  # rank 0 alone logs

def test_slurm_two_jobs_on_one_run_folder_never_mix(tmp_path, cluster):
    c1, out = write_cfg(tmp_path, "one")
    c2, _ = write_cfg(tmp_path, "two", out_dir=str(out), method_kw={**BASE["method_kw"], "lamb": 0.3})
    j1 = sbatch(tmp_path, "one", f"{TRAIN} {c1}", "--hold")
    j2 = sbatch(tmp_path, "two", f"{TRAIN} {c2}", "--hold")
    subprocess.run(["scontrol", "release", f"{j1},{j2}"], check=True, timeout=60)  # both start in one scheduling pass
    ends = {j: wait_done(j, release=False) for j in (j1, j2)}
    logs = {j: (tmp_path / f"{n}.log").read_text() for j, n in ((j1, "one"), (j2, "two"))}
    ok = [j for j in ends if ends[j]["JobState"] == "COMPLETED"]
    assert len(ok) == 1, (ends, logs)
    loser = j2 if ok == [j1] else j1
    refused = re.search(rf"run folder {re.escape(str(out.resolve()))} is in use by another run \(pid \d+ on \S+, SLURM job {ok[0]}, since", logs[loser])
    assert refused or f"out_dir {out} is not empty" in logs[loser], logs[loser][-3000:]
    print("the second job was", "refused while the first held the folder" if refused else "refused after the first finished")
    lamb = 0.3 if ok == [j2] else BASE["method_kw"].get("lamb")
    for f in ("last.pt", "best.pt"):
        assert torch.load(out / f, weights_only=True)["config"]["method_kw"].get("lamb") == lamb, f
    assert yaml.safe_load((out / "config.yaml").read_text())["method_kw"].get("lamb") == lamb
    assert pd.read_csv(out / "metrics.csv").step.tolist() == list(range(1, BASE["steps"] + 1))  # every row once

def tree(d: Path) -> dict:
    "Every file of a run with its bytes' hash and modification time (the lock file aside: each look at the run takes it)."
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".run.lock"}

SMALL = ["steps=2", "data.n=32", "batch_size=8", "encoder_kw.depth=1", "log_every=1"]

def test_slurm_library_edit_off_training_reuses_every_run_and_a_loss_edit_retrains(tmp_path, cluster):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "sslmed", repo / "sslmed", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "recipes", repo / "recipes")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    (repo / "nbs" / "experiments").mkdir(parents=True)
    env = {**ENV, "PYTHONPATH": str(repo)}
    def train_all(tag, methods=("lejepa", "random")):
        jobs = {m: sbatch(tmp_path, f"{tag}-{m}", f"cd {repo}\nexec {sys.executable} -m sslmed.train --recipe ecg --method {m} "
                                                   f"--profile smoke --set {' '.join(SMALL)}", f"--export=ALL,PYTHONPATH={repo}")
                for m in methods}
        for m, j in jobs.items():
            e = wait_done(j)
            assert e["JobState"] == "COMPLETED", (e, (tmp_path / f"{tag}-{m}.log").read_text()[-3000:])
        return {m: (tmp_path / f"{tag}-{m}.log").read_text() for m in methods}
    store = repo / "runs" / "train" / "smoke" / "ecg"
    train_all("first")
    runs = sorted(store.iterdir())
    assert [p.name.split("_s0_")[0] for p in runs] == ["lejepa", "random"], runs
    before = {p.name: tree(p) for p in runs}
    # off training: a docstring and a comment in training modules, a new function in reports
    losses = repo / "sslmed" / "losses.py"
    src = losses.read_text()
    doc = re.search(r'def lejepa_loss\(.*?\n\s+"(.*?)"\n', src, re.S)
    losses.write_text(src.replace(doc[1], "LeJEPA's loss, reworded.") + "\n# a comment at the end\n")
    (repo / "sslmed" / "reports.py").write_text((repo / "sslmed" / "reports.py").read_text() + "\ndef _new_plot(): return 1\n")
    logs = train_all("again")
    assert all('"reused": true' in l for l in logs.values()), logs
    assert sorted(store.iterdir()) == runs and {p.name: tree(p) for p in runs} == before
    # make paper's pretrain finds the hand-started runs (the same folder, nothing trained)
    code = (f"from sslmed.protocols import pretrain; print(pretrain('ecg', 'lejepa', 'smoke', overrides={SMALL!r}, root={str(repo)!r}))")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, cwd=repo)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == str(runs[0]), r.stderr[-2000:]
    assert tree(runs[0]) == before[runs[0].name]
    # a change to the loss: the run trains anew, into its own folder
    src = losses.read_text()
    assert "inv = (g.mean(0) - a).square().mean()" in src
    losses.write_text(src.replace("inv = (g.mean(0) - a).square().mean()", "inv = (g.mean(0) - a).abs().mean()"))
    logs = train_all("changed", ("lejepa",))
    assert '"reused": true' not in logs["lejepa"]
    new = sorted(set(store.iterdir()) - set(runs))
    assert len(new) == 1 and new[0].name.startswith("lejepa_s0_") and (new[0] / "backbone.pt").is_file(), new
    assert {p.name: tree(p) for p in runs} == before  # the old runs stay as they were
