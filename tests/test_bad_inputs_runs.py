"""Bad-input corpus for runs: out-of-range settings, broken config files, runs that must not destroy results.

Each case asserts its outcome: an error naming the key (or file) — never a run that trains a wrong model."""
import math, os, signal, subprocess, sys, textwrap
from pathlib import Path
import pytest, yaml
from sslmed.config import TrainConfig, ConfigError, recipe
from sslmed.train import fit

OUT_OF_RANGE = [  # key, value, words the message must contain
    ("grad_clip", -1.0, "grad_clip"), ("grad_clip", 0.0, "grad_clip"), ("lr", -0.3, "lr"), ("lr", 0.0, "lr"),
    ("lr", math.inf, "lr"), ("swa_start", 1.5, "swa_start"), ("swa_start", -0.1, "swa_start"), ("ckpt_every", 0, "ckpt_every"),
    ("log_every", 0, "log_every"), ("steps", 0, "steps"), ("batch_size", 0, "batch_size"), ("weight_decay", -1e-4, "weight_decay"),
    ("momentum", 1.0, "momentum"), ("betas", [0.9, 1.0], "betas"), ("warmup_steps", -1, "warmup_steps"),
    ("keep_every", 0, "keep_every"), ("num_workers", -1, "num_workers"), ("precision", "fp16", "precision"),
    ("optimizer", "adam", "optimizer"), ("device", "gpu", "device"), ("method", "simclr", "method"),
    ("domain", "chest", "domain"), ("accum_steps", 0, "accum_steps"), ("monitor_mode", "lowest", "monitor_mode"),
    ("seed", -1, "seed"),
]

@pytest.mark.parametrize("key,value,words", OUT_OF_RANGE, ids=[f"{k}={v}" for k, v, _ in OUT_OF_RANGE])
def test_out_of_range_setting_is_refused_naming_the_key(key, value, words):
    with pytest.raises(ConfigError) as e: TrainConfig(**{key: value})
    assert e.value.key == key and words in str(e.value)


WRONG_TYPE = [("steps", 2.5), ("steps", "10"), ("lr", "fast"), ("views", [1, 2]), ("resume", "yes"), ("encoder_kw", 3)]

@pytest.mark.parametrize("key,value", WRONG_TYPE, ids=[f"{k}={v!r}" for k, v in WRONG_TYPE])
def test_wrong_type_is_refused_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key): TrainConfig(**{key: value})


def test_unknown_key_names_the_closest_known_one():
    with pytest.raises(ValueError, match=r"unknown key 'learning_rate'"): TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"did you mean 'steps'"): TrainConfig.from_dict({"stpes": 3})


@pytest.mark.parametrize("text,words", [("lr: [0.1\nsteps: 3\n", "not valid YAML"), ("- 1\n- 2\n", "expected a mapping"),
                                         ("lr: -1\n", "lr")], ids=["unparsable", "a list", "out of range"])
def test_broken_config_file_names_the_file(tmp_path, text, words):
    p = tmp_path / "cfg.yaml"; p.write_text(text)
    with pytest.raises(ValueError) as e: TrainConfig.from_yaml(p)
    assert str(p) in str(e.value) and words in str(e.value)


def test_missing_config_file_and_missing_recipe():
    with pytest.raises(FileNotFoundError, match="nope.yaml"): TrainConfig.from_yaml("nope.yaml")
    with pytest.raises((FileNotFoundError, ValueError), match="chest"): recipe("chest", "lejepa", "smoke")


def tiny(tmp_path, **kw) -> TrainConfig:
    return recipe("ecg", "lejepa", "smoke", ["steps=2", "batch_size=4", "data.n=8", "encoder_kw.depth=1", "progress=false",
                                             f"out_dir={tmp_path / 'run'}", *[f"{k}={v}" for k, v in kw.items()]])


def snapshot(d: Path) -> dict:
    return {p.relative_to(d): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(d.rglob("*")) if p.is_file()}


def test_new_run_into_a_used_out_dir_refuses_and_touches_nothing(tmp_path):
    fit(tiny(tmp_path))
    before = snapshot(tmp_path / "run")
    with pytest.raises(FileExistsError, match="not empty"): fit(tiny(tmp_path, seed=1))
    assert snapshot(tmp_path / "run") == before


def test_refused_resume_changes_nothing_on_disk(tmp_path):
    fit(tiny(tmp_path))
    before = snapshot(tmp_path / "run")
    with pytest.raises(Exception, match="seed"): fit(tiny(tmp_path, resume="true", seed=1))  # another run's config
    assert snapshot(tmp_path / "run") == before


def test_temp_files_of_a_killed_write_are_removed_at_the_next_start(tmp_path):
    run = tmp_path / "run"; run.mkdir()
    stale = run / ".last.pt.abcd1234.pt"  # what atomic_path names a checkpoint in progress
    stale.write_bytes(b"half a checkpoint")
    fit(tiny(tmp_path))
    assert not stale.exists() and (run / "backbone.pt").is_file()
