"""Runs never destroy results: refusals change nothing on disk, killed writes are cleaned up, bad values are named."""
import hashlib, os, re, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
import yaml
from sslmed.config import TrainConfig, ConfigError
from sslmed.train import fit
from sslmed.runs import load_checkpoint

BASE = dict(domain="ecg", dataset="phantom", data=dict(n=32, fs=100), method="lejepa", encoder="vit1d_tiny",
            encoder_kw=dict(patch_size=25, depth=1), views=dict(crop=250, fs=100, n_global=2, n_local=0),
            method_kw=dict(proj_hidden=32, proj_dim=16, num_slices=32, proj_norm="ln"), steps=4, batch_size=8,
            lr=1e-3, log_every=1, ckpt_every=2, progress=False, seed=3)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}

def cfg(out, **over): return TrainConfig.from_dict({**BASE, "out_dir": str(out), **over})

def tree(d: Path) -> dict:
    "Every file under `d` with its bytes' hash and its modification time: what 'nothing changed' means."
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file()}

def cli(out, *sets):
    p = out.parent / f"{out.name}.yaml"
    p.write_text(yaml.safe_dump({**BASE, "out_dir": str(out)}))
    return subprocess.run([sys.executable, "-m", "sslmed.train", "--config", str(p), "--set", *sets],
                          env=ENV, capture_output=True, text=True, timeout=600)

def test_a_new_run_refuses_a_folder_with_results_and_touches_nothing(tmp_path):
    out = tmp_path / "run"
    fit(cfg(out))
    before = tree(out)
    with pytest.raises(FileExistsError, match=rf"out_dir {out} is not empty: it holds backbone.pt, backbone.safetensors, backbone_last.pt, backbone_last.safetensors, best-loss.pt, best.pt, config.yaml"):
        fit(cfg(out, steps=6, lr=5e-3))
    r = cli(out, "steps=6")  # the command line says the same, and also changes nothing
    assert r.returncode != 0 and "is not empty" in r.stderr and "overwrite: true" in r.stderr, r.stderr[-1500:]
    assert tree(out) == before

def test_overwrite_replaces_the_old_run_and_keeps_foreign_files(tmp_path):
    out = tmp_path / "run"
    fit(cfg(out, steps=6, keep_every=3))
    (out / "notes.txt").write_text("mine")
    fit(cfg(out, steps=2, overwrite=True))
    held = sorted(p.name for p in out.iterdir())
    assert held == [".run.lock", "backbone.pt", "backbone.safetensors", "backbone_last.pt", "backbone_last.safetensors", "best-loss.pt", "best.pt", "config.yaml", "last.pt", "metrics.csv", "notes.txt", "tb"], held
    assert list(pd.read_csv(out / "metrics.csv").step) == [1, 2] and load_checkpoint(out / "last.pt")["step"] == 2
    assert len(list((out / "tb").iterdir())) == 1  # the old run's event file went with it

def test_a_refused_resume_changes_nothing_on_disk(tmp_path):
    out = tmp_path / "run"
    fit(cfg(out))
    before = tree(out)
    with pytest.raises(ConfigError, match=r"config keys \['method_kw'\] differ") as e:
        fit(cfg(out, resume=True, steps=8, method_kw={**BASE["method_kw"], "lamb": 0.3}))
    assert e.value.key == "method_kw"
    assert tree(out) == before  # config.yaml in particular still holds the accepted run's config
    assert TrainConfig.from_yaml(out / "config.yaml").steps == 4

def test_temp_files_of_a_killed_write_are_removed_at_the_next_start(tmp_path):
    out = tmp_path / "run"
    fit(cfg(out))
    # a process killed by SIGKILL in the middle of an atomic write: its temp file stays behind
    kill = ("import os, signal, sys; from sslmed.core import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'half a checkpoint'); os.kill(os.getpid(), signal.SIGKILL)")
    r = subprocess.run([sys.executable, "-c", kill, str(out / "last.pt")], env=ENV)
    assert r.returncode == -9
    leftover = [p for p in out.iterdir() if p.name.startswith(".last.pt.")]
    assert len(leftover) == 1
    r = cli(out, "resume=true", "steps=6")
    assert r.returncode == 0, r.stderr[-1500:]
    assert f"removed from {out}: {leftover[0].name}" in r.stderr
    assert not leftover[0].exists() and load_checkpoint(out / "last.pt")["step"] == 6

def test_an_out_of_range_value_is_named_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    r = cli(out, "grad_clip=-1")  # -1 used to flip every gradient
    assert r.returncode != 0 and "config key 'grad_clip' must be null (no clipping) or > 0, got -1" in r.stderr, r.stderr[-1500:]
    assert not out.exists()
    for key, value, words in [("swa_start", "1.5", "in [0, 1)"), ("ckpt_every", "0", ">= 1"), ("lr", "-0.1", "> 0"),
                              ("betas", "[0.9,1.2]", "two numbers in [0, 1)"), ("device", "gpu", "cuda:N")]:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({**BASE, "out_dir": str(out)}))
        with pytest.raises(ConfigError, match=rf"c.yaml: config key '{key}' must be .*{re.escape(words)}.*, got") as e:
            TrainConfig.from_yaml(tmp_path / "c.yaml", [f"{key}={value}"])
        assert e.value.key == key
