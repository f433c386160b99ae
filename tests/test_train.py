"""The trainer from the command line: exact resume after SIGKILL, DDP equivalence, guards, bad configs."""
import os, random, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest
import torch
import yaml
from sslmed.train import TrainConfig, fit, load_checkpoint, TrainingDiverged, CheckpointError

# a tiny ECG LeJEPA on the phantom: seconds on CPU
BASE = dict(domain="ecg", dataset="phantom", data=dict(n=64, fs=100), method="lejepa", encoder="vit1d_tiny",
            encoder_kw=dict(patch_size=25, depth=1), views=dict(crop=250, fs=100, n_global=2, n_local=1, local_crop=125),
            method_kw=dict(proj_hidden=32, proj_dim=16, num_slices=32, proj_norm="ln"), steps=10, batch_size=8,
            lr=1e-3, warmup_steps=2, log_every=1, ckpt_every=2, progress=False, seed=3)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}

def write_cfg(tmp_path, name="cfg.yaml", **over):
    cfg = {**BASE, "out_dir": str(tmp_path / name.replace(".yaml", "")), **over}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p, Path(cfg["out_dir"])

def train_cmd(cfg, *sets, nproc=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(random.randint(20000, 40000))] if nproc > 1 else [sys.executable]
    return launcher + ["-m", "sslmed.train", "--config", str(cfg)] + (["--set", *sets] if sets else [])

def losses(out):
    df = pd.read_csv(out / "metrics.csv")
    return df[["step", "loss", "inv", "sigreg", "lr", "grad_norm"]]

def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    cfg_a, out_a = write_cfg(tmp_path, "a.yaml")
    subprocess.run(train_cmd(cfg_a), check=True, env=ENV, capture_output=True, timeout=600)
    cfg_b, out_b = write_cfg(tmp_path, "b.yaml")
    kill_after = random.randint(3, 8)  # rows logged before the kill
    p = subprocess.Popen(train_cmd(cfg_b), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    csv = out_b / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if csv.exists() and len(csv.read_text().splitlines()) > kill_after: break
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before it could be killed"
    p.send_signal(signal.SIGKILL); p.wait()
    killed_at = load_checkpoint(out_b / "last.pt")["step"]
    assert killed_at < BASE["steps"]
    subprocess.run(train_cmd(cfg_b, "resume=true"), check=True, env=ENV, capture_output=True, timeout=600)
    a, b = losses(out_a), losses(out_b)
    assert list(b.step) == list(range(1, BASE["steps"] + 1)), f"killed after {kill_after} rows, ckpt at {killed_at}"
    pd.testing.assert_frame_equal(a, b, check_exact=True)  # bitwise: same floats, not merely close
    ta, tb = (torch.load(o / "last.pt", weights_only=True)["model"] for o in (out_a, out_b))
    for k in ta: assert torch.equal(ta[k], tb[k]), k

def test_torn_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    cfg, out = write_cfg(tmp_path, steps=2)
    out.mkdir(parents=True)
    (out / "last.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    r = subprocess.run(train_cmd(cfg, "resume=true"), env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "not a readable sslmed checkpoint" in r.stderr, r.stderr[-2000:]
    torch.save({"weights": torch.ones(1)}, out / "last.pt")
    with pytest.raises(CheckpointError, match="missing format marker"):
        fit(TrainConfig.from_yaml(cfg, ["resume=true"]))

def test_resume_refuses_a_different_config(tmp_path):
    cfg, out = write_cfg(tmp_path, steps=2)
    fit(TrainConfig.from_yaml(cfg))
    with pytest.raises(ValueError, match=r"config keys \['method_kw'\] differ"):
        fit(TrainConfig.from_yaml(cfg, ["resume=true", "steps=4", "method_kw.lamb=0.3"]))

def test_two_gloo_processes_equal_one_with_the_doubled_batch(tmp_path):
    steps = 3
    cfg1, out1 = write_cfg(tmp_path, "single.yaml", steps=steps, batch_size=16, views={**BASE["views"], "chunk": 8})
    cfg2, out2 = write_cfg(tmp_path, "ddp.yaml", steps=steps, batch_size=8)
    subprocess.run(train_cmd(cfg1), check=True, env=ENV, capture_output=True, timeout=600)
    r = subprocess.run(train_cmd(cfg2, nproc=2), env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s1, s2 = (load_checkpoint(o / "last.pt")["model"] for o in (out1, out2))
    for k in s1:
        torch.testing.assert_close(s2[k], s1[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
    # and the runs really trained: the SIGReg-bearing loss changed across steps
    l1 = pd.read_csv(out1 / "metrics.csv").loss
    assert l1.iloc[0] != l1.iloc[-1]

class NaNAfter(torch.utils.data.Dataset):
    "ECG-shaped samples that turn NaN once `bad` items have been served (the loader runs in-process)."
    def __init__(self, n=64, bad=40): self.n, self.bad, self.served = n, bad, 0
    def __len__(self): return self.n
    def __getitem__(self, i):
        self.served += 1
        x = torch.randn(12, 300, generator=torch.Generator().manual_seed(i))
        return (x * float("nan") if self.served > self.bad else x), {"superclass": i % 4}

def test_non_finite_loss_stops_with_the_step_and_keeps_last_good_checkpoint(tmp_path):
    cfg, out = write_cfg(tmp_path, steps=20, ckpt_every=1)
    with pytest.raises(TrainingDiverged, match=r"step \d+: .*non-finite.*last good state"):
        fit(TrainConfig.from_yaml(cfg), dataset=NaNAfter())
    ck = load_checkpoint(out / "last.pt")
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert 0 < ck["step"] < 20

def test_sigreg_needs_two_samples_per_batch(tmp_path):
    cfg, _ = write_cfg(tmp_path, batch_size=1)
    with pytest.raises(ValueError, match="at least 2 samples per global batch"):
        fit(TrainConfig.from_yaml(cfg))

def test_cli_names_a_misspelt_key(tmp_path):
    cfg, _ = write_cfg(tmp_path)
    r = subprocess.run(train_cmd(cfg, "batchsize=4"), env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "unknown key 'batchsize'" in r.stderr and "batch_size" in r.stderr, r.stderr[-1500:]
