"""The trainer from the command line: exact resume after SIGKILL, DDP equivalence, guards, bad configs."""
import os, random, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest
import torch
import yaml
from sslmed.config import TrainConfig
from sslmed.train import fit, TrainingDiverged
from sslmed.runs import load_checkpoint, CheckpointError

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

# --- parity with the seed systems -------------------------------------------------------------------------------------
from sslmed.config import ConfigError, recipe
from sslmed.runs import load_backbone
from sslmed.train import build_dataset

def tiny(tmp_path, name, **over):
    "A TrainConfig of BASE in tmp_path/name."
    return TrainConfig.from_dict({**BASE, "out_dir": str(tmp_path / name), **over})

SUPERVISED = dict(method="supervised", method_kw={}, views=dict(crop=250, fs=100, n_global=1, n_local=0),
                  optimizer="sgd", lr=0.1, weight_decay=0.0, steps=2, warmup_steps=0)

def test_accumulated_micro_batches_equal_one_large_batch(tmp_path):
    # a loss that is a mean over samples: k micro-batches of b give the step of one batch of k·b (views keyed alike: chunk=b)
    big = tiny(tmp_path, "big", **{**SUPERVISED, "views": {**SUPERVISED["views"], "chunk": 4}}, batch_size=16)
    acc = tiny(tmp_path, "acc", **SUPERVISED, batch_size=4, accum_steps=4)
    fit(big); fit(acc)
    a, b = (load_checkpoint(Path(c.out_dir) / "last.pt")["model"] for c in (big, acc))
    for k in a: torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=lambda m: f"{k}: {m}")
    la, lb = (pd.read_csv(Path(c.out_dir) / "metrics.csv").loss for c in (big, acc))
    assert (la - lb).abs().max() < 1e-5 and la.iloc[0] != la.iloc[-1]  # the logged loss is the large batch's mean; it trained

def test_accumulation_is_not_the_large_batch_for_sigreg(tmp_path):
    # SIGReg is a statistic of the batch: accumulated micro-batches give a different step (documented in TrainConfig)
    big = tiny(tmp_path, "big", steps=1, batch_size=16, views={**BASE["views"], "chunk": 4})
    acc = tiny(tmp_path, "acc", steps=1, batch_size=4, accum_steps=4)
    fit(big); fit(acc)
    a, b = (load_checkpoint(Path(c.out_dir) / "last.pt")["model"] for c in (big, acc))
    assert max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point()) > 1e-5

def test_tensorboard_holds_the_seed_systems_names(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = {}
    for m, over in [("lejepa", ["encoder_kw.depth=1"]), ("sigreg_jepa", ["encoder_kw.depth=1"])]:
        out = tmp_path / m
        fit(recipe("ecg", m, "smoke", ["steps=2", "batch_size=4", "data.n=16", "log_every=1", "progress=false", f"out_dir={out}", *over]))
        tags[m] = set(EventAccumulator(str(out / "tb")).Reload().Tags()["scalars"])
    seed000 = {"train/lejepa_loss", "train/sigreg_loss", "train/inv_loss", "train/lr"}
    seed001 = {"train/loss", "train/pred_loss", "train/sigreg_loss", "train/lr", "train/step_time", "train/throughput", "gradients/norm"}
    assert seed000 <= tags["lejepa"], tags["lejepa"]
    assert seed001 <= tags["sigreg_jepa"], tags["sigreg_jepa"]
    assert "train/lejepa_loss" not in tags["sigreg_jepa"]

def test_backbone_loads_with_the_seed_snippet_verbatim(tmp_path):
    import timm
    cfg = recipe("fundus", "random", "smoke", ["encoder=vit_small_patch8_224", "data.n=4", "progress=false", f"out_dir={tmp_path}"])
    fit(cfg)
    # seed 000's fine-tuning snippet, verbatim but for the path
    backbone = timm.create_model('vit_small_patch8_224', num_classes=0)
    backbone.load_state_dict(torch.load(str(tmp_path / 'backbone.pt')))
    enc = load_backbone(tmp_path / "backbone.pt")
    for k, v in enc.model.state_dict().items(): assert torch.equal(backbone.state_dict()[k], v), k

def test_trained_timm_backbone_loads_into_timm_and_into_load_backbone(tmp_path):
    import timm
    fit(recipe("fundus", "lejepa", "smoke", ["encoder=test_vit", "views.size=160", "data.size=160", "data.n=8", "batch_size=4", "steps=2",
                                            "method_kw.proj_hidden=32", "method_kw.proj_dim=16", "method_kw.num_slices=16",
                                            "progress=false", f"out_dir={tmp_path}"]))
    backbone = timm.create_model('test_vit', num_classes=0)   # the seed snippet with a small timm ViT
    backbone.load_state_dict(torch.load(str(tmp_path / 'backbone.pt')))
    enc, last = load_backbone(tmp_path / "backbone.pt"), load_checkpoint(tmp_path / "last.pt")["model"]
    for k, v in backbone.state_dict().items():
        assert torch.equal(enc.model.state_dict()[k], v) and torch.equal(last[f"encoder.model.{k}"], v), k  # the trained weights
    x = torch.rand(2, 3, 160)[..., None].expand(2, 3, 160, 160).contiguous()
    with torch.no_grad(): assert torch.equal(enc(x), load_backbone(tmp_path / "last.pt")(x))

class StopAfter(torch.utils.data.Dataset):
    "A dataset that fails once `limit` items have been served: a run that dies mid-way (in-process)."
    def __init__(self, ds, limit): self.ds, self.limit, self.served = ds, limit, 0
    def __len__(self): return len(self.ds)
    def __getitem__(self, i):
        self.served += 1
        if self.served > self.limit: raise KeyboardInterrupt("the run died here")
        return self.ds[i]

def test_resume_from_a_checkpoint_file_continues_exactly(tmp_path):
    whole, dead, cont = tiny(tmp_path, "whole", steps=6), tiny(tmp_path, "dead", steps=6), None
    ds = build_dataset(whole)
    fit(whole, dataset=ds)
    with pytest.raises(KeyboardInterrupt): fit(dead, dataset=StopAfter(ds, 3 * BASE["batch_size"]))  # dies in step 4
    assert load_checkpoint(tmp_path / "dead" / "last.pt")["step"] == 2
    cont = tiny(tmp_path, "cont", steps=6, resume_from=str(tmp_path / "dead" / "last.pt"))  # seed 000: resume_from: PATH
    fit(cont, dataset=ds)
    a, c = losses(tmp_path / "whole"), losses(tmp_path / "cont")
    assert list(c.step) == [3, 4, 5, 6]
    pd.testing.assert_frame_equal(a[a.step > 2].reset_index(drop=True), c.reset_index(drop=True), check_exact=True)
    ta, tc = (load_checkpoint(tmp_path / o / "last.pt")["model"] for o in ("whole", "cont"))
    for k in ta: assert torch.equal(ta[k], tc[k]), k

def test_init_from_starts_a_new_run_from_an_earlier_encoder(tmp_path):
    fit(tiny(tmp_path, "stage1", steps=2))
    s1 = tmp_path / "stage1"
    for src in ("backbone.pt", "last.pt"):
        stage2 = tiny(tmp_path, f"stage2_{src}", steps=3, seed=7, data=dict(n=48, fs=100), keep_every=100,
                      init_from=str(s1 / src))   # seed 004's multi-stage pretraining: new data, fresh optimiser
        fit(stage2)
        out = Path(stage2.out_dir)
        start, before = torch.load(out / "backbone_step0.pt"), torch.load(s1 / "backbone.pt")
        for k in before: assert torch.equal(start[k], before[k]), k
        ck = load_checkpoint(out / "last.pt")
        assert ck["step"] == 3 and list(pd.read_csv(out / "metrics.csv").step) == [1, 2, 3]
        assert ck["optimizer"]["state"][0]["step"].item() == 3  # a fresh optimiser: three steps of its own
    with pytest.raises(CheckpointError, match="do not fit the encoder vit1d_tiny"):
        fit(tiny(tmp_path, "wrong", encoder_kw=dict(patch_size=50, depth=1), init_from=str(s1 / "backbone.pt")))

def test_monitor_keeps_best_by_min_or_max(tmp_path):
    import numpy as np
    for monitor, mode in [("sigreg", "min"), ("lr", "max")]:
        cfg = tiny(tmp_path, f"{monitor}_{mode}", steps=6, warmup_steps=3, monitor=monitor, monitor_mode=mode)
        fit(cfg)
        out = Path(cfg.out_dir)
        m = pd.read_csv(out / "metrics.csv")
        windows = [m[monitor][i:i + 2].mean() for i in (0, 2, 4)]  # ckpt_every=2: the mean of each checkpoint interval
        k = int(np.argmin(windows) if mode == "min" else np.argmax(windows))
        best = load_checkpoint(out / "best.pt")
        assert best["step"] == 2 * (k + 1) and np.isclose(best["value"], windows[k], rtol=1e-9, atol=0)
        assert (out / f"best-{monitor}.pt").read_bytes() == (out / "best.pt").read_bytes()  # seed 004's name
    assert load_checkpoint(tmp_path / "lr_max" / "best.pt")["step"] == 4  # the lr peaks after the warm-up
    with pytest.raises(ConfigError, match=r"'monitor' is 'acc'.*\['loss', 'inv', 'sigreg', 'lr', 'grad_norm'\]"):
        fit(tiny(tmp_path, "acc", monitor="acc"))

def test_wandb_missing_is_one_warning_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.warns(UserWarning, match="wandb is not installed") as w:
        fit(tiny(tmp_path, "run", steps=2, wandb=True))
    assert len([x for x in w if "wandb" in str(x.message)]) == 1 and (tmp_path / "run" / "backbone.pt").is_file()

def test_wandb_logs_the_same_scalars_offline(tmp_path, monkeypatch):
    import types
    calls = []
    class FakeRun:
        def log(self, d, step): calls.append(("log", step, dict(d)))
        def finish(self): calls.append(("finish",))
    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw)) or FakeRun())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    fit(tiny(tmp_path, "run", steps=2, wandb=True))
    init = calls[0][1]
    assert calls[0][0] == "init" and init["mode"] == "offline" and init["config"]["steps"] == 2
    logs = [c for c in calls if c[0] == "log"]
    assert [c[1] for c in logs] == [1, 2] and {"train/lejepa_loss", "train/sigreg_loss", "gradients/norm"} <= set(logs[0][2])
    assert calls[-1] == ("finish",)
