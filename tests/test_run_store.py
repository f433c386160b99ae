"""One run owns its folder, stops cleanly on SIGTERM/SIGUSR1 and resumes exactly, and the run store reuses, resumes or
replaces a run as its identity says (no SLURM needed: tests/test_slurm_runs.py does the same through a real one)."""
import os, signal, socket, subprocess, sys, threading, time
from pathlib import Path
import pandas as pd
import pytest
import torch
from sslmed.config import TrainConfig
from sslmed.runs import RunLocked, load_checkpoint, lock_holder
from sslmed.train import fit, build_dataset, RunStopped, ensure_trained
from test_run_safety import BASE as SAFETY_BASE, ENV

BASE = {**SAFETY_BASE, "steps": 8, "ckpt_every": 3}  # the run-safety tests' tiny ECG run, long enough to stop mid-way

def cfg(out, **over): return TrainConfig.from_dict({**BASE, "out_dir": str(out), **over})

class SignalAt(torch.utils.data.Dataset):
    "A dataset that sends this process `sig` when item number `at` is served (the loader runs in-process)."
    def __init__(self, ds, sig, at): self.ds, self.sig, self.at, self.served = ds, sig, at, 0
    def __len__(self): return len(self.ds)
    def __getitem__(self, i):
        self.served += 1
        if self.served == self.at: os.kill(os.getpid(), self.sig)
        return self.ds[i]

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_stops_the_run_after_its_step_and_resume_is_bitwise(tmp_path, sig):
    fit(cfg(tmp_path / "whole"))
    c = cfg(tmp_path / "stopped")
    with pytest.raises(RunStopped, match=rf"stopped by {sig.name} after step 5; .*last.pt holds it") as e:
        fit(c, dataset=SignalAt(build_dataset(c), sig, 4 * 8 + 3))  # during step 5 (1-based), between checkpoints 3 and 6
    assert not e.value.requeued  # no SLURM job to requeue
    assert signal.getsignal(sig) is signal.SIG_DFL  # the handlers are the process's own again
    assert load_checkpoint(tmp_path / "stopped" / "last.pt")["step"] == 5
    fit(cfg(tmp_path / "stopped", resume=True))
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("whole", "stopped"))
    for k in a["model"]: assert torch.equal(a["model"][k], b["model"][k]), k
    for p, st in a["optimizer"]["state"].items():
        for k, v in st.items(): assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizer"]["state"][p][k])), (p, k)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]) and (a["step"], a["best"]) == (b["step"], b["best"])
    cols = ["step", "loss", "inv", "sigreg", "lr", "grad_norm"]
    pd.testing.assert_frame_equal(*(pd.read_csv(tmp_path / d / "metrics.csv")[cols] for d in ("whole", "stopped")), check_exact=True)

HOLD = "import sys, time; from sslmed.runs import run_lock\nwith run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(float(sys.argv[2]))"

def holder(out, seconds):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out), str(seconds)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p

def test_a_second_run_on_a_held_folder_is_refused_naming_the_holder_or_waits(tmp_path):
    out = tmp_path / "run"
    p = holder(out, 600)
    try:
        with pytest.raises(RunLocked, match=rf"run folder {out.resolve()} is in use by another run \(pid {p.pid} on "
                                            rf"{socket.gethostname()}, since .*\); two runs in one folder would mix"):
            fit(cfg(out))
        assert [f.name for f in out.iterdir()] == [".run.lock"]  # nothing of the refused run was written
        assert lock_holder(out)["pid"] == p.pid
        threading.Timer(1.0, p.kill).start()  # the holder dies (SIGKILL): the kernel lets go of its lock
        fit(cfg(out, lock_wait=300.0))  # this one waits for it, then trains
    finally: p.kill(); p.wait()
    assert load_checkpoint(out / "last.pt")["step"] == BASE["steps"] and lock_holder(out) == {}

def test_the_store_reuses_a_finished_run_resumes_an_unfinished_one_and_replaces_a_foreign_one(tmp_path):
    out = tmp_path / "run"
    assert ensure_trained(cfg(out))["reused"] is False
    before = (out / "backbone.pt").stat().st_mtime_ns
    assert ensure_trained(cfg(out))["reused"] is True and (out / "backbone.pt").stat().st_mtime_ns == before
    (out / "backbone.pt").unlink()  # unfinished: killed after its last checkpoint at step 6 of 8
    last = load_checkpoint(out / "last.pt")
    torch.save({**last, "step": 6}, out / "last.pt")
    res = ensure_trained(cfg(out))
    assert res["reused"] is False and (out / "backbone.pt").is_file()
    assert pd.read_csv(out / "metrics.csv").step.tolist() == list(range(1, 9))  # resumed at 6, not started again
    res = ensure_trained(cfg(out, lr=2e-3))  # another config in this folder (a foreign run): replaced
    assert res["reused"] is False and load_checkpoint(out / "last.pt")["config"]["lr"] == 2e-3
