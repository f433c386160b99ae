"""Bad-input corpus for runs: out-of-range settings, broken config files, runs that must not destroy results.

Each case asserts its outcome: an error naming the key (or file) — never a run that trains a wrong model."""
import math, os, signal, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch, yaml
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


def test_a_checkpoint_write_that_fails_names_the_path_and_what_survived(tmp_path):
    "A real write error from the kernel (EFBIG under RLIMIT_FSIZE, as a full disk would be ENOSPC): the path, the cause, the survivor."
    script = textwrap.dedent("""
        import resource, signal, sys, torch
        from sslmed.runs import save_checkpoint, WriteError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # the write then fails with EFBIG instead of killing the process
        p = sys.argv[1]
        save_checkpoint(p, step=1, model={"w": torch.zeros(10)})
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try: save_checkpoint(p, step=2, model={"w": torch.zeros(1_000_000)})
        except WriteError as e: print("WriteError:", e); sys.exit(3)
    """)
    ck = tmp_path / "run" / "last.pt"
    r = subprocess.run([sys.executable, "-c", script, str(ck)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 3, r.stdout + r.stderr
    msg = r.stdout.strip()
    assert msg.startswith(f"WriteError: cannot write {ck} (OSError: [Errno 27] File too large); "), msg
    assert msg.endswith(f"nothing was replaced: the previous last.pt is intact ({ck.stat().st_size} bytes)"), msg
    assert torch.load(ck, weights_only=True)["step"] == 1                       # the last good checkpoint survives, readable
    assert sorted(p.name for p in ck.parent.iterdir()) == ["last.pt"]             # and no half-written temporary file


def test_a_dataset_smaller_than_one_batch_names_batch_size_accum_steps_and_world_size(tmp_path):
    with pytest.raises(ConfigError) as e: fit(tiny(tmp_path, batch_size=4, accum_steps=4))   # 8 phantom items, a batch of 16
    assert e.value.key == "batch_size"
    assert str(e.value) == ("dataset ECGPhantom has 8 items, fewer than one global batch of batch_size 4 × accum_steps 4 × world size 1 "
                            "= 16: lower batch_size or accum_steps, or give it more data")


def test_a_key_written_twice_in_a_config_file_is_refused_with_file_and_key(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text("method: lejepa\nlr: 0.001\nsteps: 3\nlr: 0.1\n")
    with pytest.raises(ConfigError) as e: TrainConfig.from_yaml(p)
    assert e.value.key == "lr" and str(e.value) == f"{p}: key 'lr' is written twice (lines 2 and 4); YAML would silently keep the second"
    p.write_text("method: lejepa\nmethod_kw:\n  lamb: 0.02\n  lamb: 0.5\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml: key 'lamb' is written twice \(lines 3 and 4\)"): TrainConfig.from_yaml(p)


def test_an_unavailable_device_is_refused_when_the_config_is_made(tmp_path):
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = "cuda" if n == 0 else f"cuda:{n}"
    want = "no CUDA device (torch.cuda.is_available() is False)" if n == 0 else f"{n} CUDA device(s), numbered 0..{n - 1}"
    with pytest.raises(ConfigError) as e: tiny(tmp_path, device=missing)
    assert e.value.key == "device" and str(e.value).endswith(
        f"config key 'device' is {missing!r}, but this machine has {want}: use device=auto (a GPU if there is one) or cpu")
    assert not (tmp_path / "run").exists()                                     # refused before anything is written


def test_a_truncated_feature_cache_is_rebuilt_with_a_warning(tmp_path):
    import warnings
    from torch import nn
    from sslmed.features import extract_features
    enc, data = nn.Linear(3, 2), [(torch.arange(3.0) + k, {"y": k % 2}) for k in range(6)]
    first = extract_features(enc, data, cache_dir=tmp_path, key="toy", progress=False)
    (f,) = tmp_path.glob("*.pt")
    f.write_bytes(f.read_bytes()[:100])                                        # a copy cut short
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        again = extract_features(enc, data, cache_dir=tmp_path, key="toy", progress=False)
    assert torch.equal(again.x, first.x) and torch.equal(again.labels["y"], first.labels["y"])
    msgs = [str(x.message) for x in w if str(x.message).startswith(f"feature cache {f} is unreadable (")]
    assert len(msgs) == 1 and msgs[0].endswith("; rebuilding it"), [str(x.message) for x in w]
    assert torch.equal(torch.load(f, weights_only=True)["x"], first.x)          # rebuilt in place
