"""Property test of seed-config translation: seed configs drawn over the ranges each seed documents (a seeded random draw;
hypothesis is not a dependency) translate, through the path `sslmed train --seed-config` calls (`translate_seed`), into the
recipe the seed itself would run — steps from epochs × dataset size ÷ images per step, views, batch, depth — each expected
value computed here from the seed's own text, not with sslmed's helpers; and a translated run starts (2 steps, tiny sizes)."""
import dataclasses, json, math, random
import pytest
import torch
import yaml
from sslmed.train import train as cli_train   # what `sslmed train` and `python -m sslmed.train` run
from sslmed.domain import get_domain, translate_seed
from sslmed.encoders import create_encoder
from sslmed.config import recipe
from sslmed.train import resolve_run

DRAWS = 40          # translated and checked per seed
RUNS = 2            # of which started for 2 steps
ARCADE_FRAMES = 2400        # ARCADE's release: train + val frames of both subsets (seed 000 pretrains on all of them)
EYEPACS_TRAIN = 35_126      # seed 002 pretrains on EyePACS train

def full(domain, method, cfg, source="seed.yaml"):
    "The full recipe under a translated seed config (what `sslmed train --recipe D --profile full --seed-config F` builds)."
    m, over = translate_seed(domain, cfg, method, source)
    return recipe(domain, m, "full", over), over, m

# ---------------------------------------------------------------- seed 000: LeJEPA on angiography (config/lejepa_config.yaml)
def draw_000(rng: random.Random, tiny=False) -> dict:
    "lamb 0.01–0.05, num_views 2–4, proj_dim 64–256 as the seed recommends; batch, size, lr, epochs around its values."
    return {"model": {"backbone": rng.choice(["vit_small_patch8_224", "vit_tiny_patch16_224", "vit_small_patch16_224"]),
                      "proj_dim": rng.randint(64, 256)},
            "data": {"batch_size": rng.choice([4, 8] if tiny else [8, 16, 32, 48, 64, 100, 128, 256]),
                     "image_size": rng.choice([64] if tiny else [128, 160, 192, 224, 256, 320]), "num_views": rng.randint(2, 4)},
            "optimizer": {"lr": rng.choice([1e-4, 5e-4, 1e-3, 2e-3, 5e-3]), "epochs": rng.randint(1, 800),
                          "lamb": round(rng.uniform(0.01, 0.05), 4)}}

def test_seed_000_any_value():
    rng = random.Random(0)
    for _ in range(DRAWS):
        s = draw_000(rng)
        cfg, _, _ = full("angio", "lejepa", s)
        b, v = s["data"]["batch_size"], s["data"]["num_views"]
        assert cfg.steps == s["optimizer"]["epochs"] * (ARCADE_FRAMES // b), s   # the seed's loader keeps whole batches
        assert (cfg.batch_size, cfg.accum_steps, cfg.lr, cfg.encoder) == (b, 1, s["optimizer"]["lr"], s["model"]["backbone"])
        assert (cfg.views["n_global"], cfg.views["n_local"], cfg.method_kw["n_global"]) == (v, 0, v)   # V views, centre = mean of all V
        assert cfg.views["size"] == s["data"]["image_size"]
        assert (cfg.method_kw["lamb"], cfg.method_kw["proj_dim"]) == (s["optimizer"]["lamb"], s["model"]["proj_dim"])
        assert cfg.warmup_steps < cfg.steps or cfg.steps == 1
    # the seed key moves only what it names: batch 64 at the seed's 400 epochs
    assert full("angio", "lejepa", {"data": {"batch_size": 64}})[0].steps == 400 * (ARCADE_FRAMES // 64)
    # other methods keep their own views and heads
    cfg, over, _ = full("angio", "vicreg", {"data": {"num_views": 3}, "optimizer": {"lamb": 0.03}, "model": {"proj_dim": 64}})
    assert cfg.method_kw == recipe("angio", "vicreg", "full").method_kw and over == []

# ---------------------------------------------------------------- seed 002: SiCoVa and triplet on fundus (module constants)
def draw_002(rng: random.Random, tiny=False) -> dict:
    return {"BATCH_SIZE": rng.choice([4] if tiny else [32, 64, 128, 256, 512]), "TOTAL_DS_EPOCHS": rng.choice([1, 10, 50, 100, 200, 300]),
            "LR": rng.choice([1e-3, 3e-3, 1e-2, 0.3]), "WEIGHT_DECAY": rng.choice([0.0, 1e-6, 1e-4, 1e-3]),
            "EMBEDDING_DIM": rng.choice([256, 512] if tiny else [256, 1024, 2048, 4096, 8192]), "NUM_CLASSES": 5}

def test_seed_002_any_value():
    rng = random.Random(2)
    for i in range(DRAWS):
        s, method = draw_002(rng), ("vicreg", "triplet")[i % 2]
        cfg, over, _ = full("fundus", method, s)
        per_step = s["BATCH_SIZE"] * (8 if method == "vicreg" else 1)          # SiCoVa accumulates 8 batches; triplet none
        assert cfg.steps == math.ceil(s["TOTAL_DS_EPOCHS"] * EYEPACS_TRAIN / per_step), (method, s)
        assert cfg.batch_size * cfg.accum_steps == per_step and cfg.batch_size == s["BATCH_SIZE"]
        assert (cfg.lr, cfg.weight_decay) == (s["LR"], s["WEIGHT_DECAY"])
        assert cfg.ckpt_every == math.ceil(10 * EYEPACS_TRAIN / per_step)      # "every 10 epochs"
        if method == "vicreg":
            assert cfg.method_kw["expander"] == s["EMBEDDING_DIM"]
            assert cfg.warmup_steps == math.ceil(10 * EYEPACS_TRAIN / per_step)   # 10 linear-warmup epochs
        else:
            assert "expander" not in cfg.method_kw and not any(o.startswith("method_kw.") for o in over)
            assert cfg.warmup_steps == 0 and cfg.method_kw["dim"] == 128            # the triplet head stays 128-d
    seed = {"BATCH_SIZE": 256, "TOTAL_DS_EPOCHS": 200, "LR": 0.003, "WEIGHT_DECAY": 1e-4, "EMBEDDING_DIM": 8192, "NUM_CLASSES": 5}
    assert (full("fundus", "triplet", seed)[0].steps, full("fundus", "vicreg", seed)[0].steps) == (27_443, 3_431)
    with pytest.raises(ValueError, match="seed key 'NUM_CLASSES' is 4"): full("fundus", "vicreg", {**seed, "NUM_CLASSES": 4})

# ---------------------------------------------------------------- seed 001: MyJEPA on ECG (configs/ViTS_mimic.yaml)
def draw_001(rng: random.Random, tiny=False) -> dict:
    heads = rng.choice([2, 3, 4, 6])
    lo = round(rng.uniform(0.1, 0.3), 3)
    return {"dim": heads * rng.choice([16, 32] if tiny else [16, 32, 64]), "depth": rng.randint(1, 2 if tiny else 12), "num_heads": heads,
            "pred_dim": 6 * rng.choice([8, 16, 32]), "pred_depth": rng.randint(1, 2 if tiny else 8),
            "sigreg_lambda": round(rng.uniform(0.005, 0.1), 4), "min_keep_ratio": lo, "max_keep_ratio": round(lo + rng.uniform(0.0, 0.2), 3)}

def test_seed_001_any_value():
    rng = random.Random(1)
    for _ in range(DRAWS):
        s = draw_001(rng)
        cfg, _, _ = full("ecg", "sigreg_jepa", s)
        assert (cfg.encoder_kw["embed_dim"], cfg.encoder_kw["depth"], cfg.encoder_kw["num_heads"]) == (s["dim"], s["depth"], s["num_heads"])
        assert (cfg.method_kw["pred_dim"], cfg.method_kw["pred_depth"], cfg.method_kw["lamb"]) == (s["pred_dim"], s["pred_depth"], s["sigreg_lambda"])
        assert cfg.method_kw["mask"]["context_ratio"] == {"min": s["min_keep_ratio"], "max": s["max_keep_ratio"]}
        # EMA-JEPA takes the predictor and mask, not λ; LeJEPA λ, not the predictor
        ema, lej = full("ecg", "ema_jepa", s)[0], full("ecg", "lejepa", s)[0]
        assert ema.method_kw["pred_depth"] == s["pred_depth"] and "lamb" not in ema.method_kw
        assert lej.method_kw["lamb"] == s["sigreg_lambda"] and "pred_dim" not in lej.method_kw

# ---------------------------------------------------------------- seed 004: NeuroVFM's training guide (YAML)
VITS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12), "vit_large": (1024, 24, 16), "vit_huge": (1280, 32, 16)}

def draw_004(rng: random.Random, tiny=False) -> dict:
    p = [round(rng.uniform(0.1, 0.8), 2)]; p += [round((1 - p[0]) / 2, 4)] * 2
    bb = rng.choice(["vit_tiny"] if tiny else list(VITS))
    return {"loader": {"train": {"batch_size": rng.choice([2, 4] if tiny else [4, 8, 16, 32, 64]), "use_study_sampler": rng.random() < 0.5,
                                 "collate_fn": {"remove_background": rng.random() < 0.5, "patch_drop_rate": rng.choice([0.0, 0.1, 0.25])}}},
            "dataset": {"params": {"ct_window_probs": p, "augment": rng.random() < 0.5}},
            "system": {"which": "VisionPretrainingSystem",
                       "params": {"vision_backbone_cf": {"which": bb}, "loss_cf": {"which": "jepa"},
                                  "predictor_cf": {"dim": 6 * rng.choice([8, 16, 32]), "depth": rng.randint(1, 2 if tiny else 8)},
                                  "ema_beta": [round(rng.uniform(0.99, 0.999), 4), 1.0],
                                  "opt_cf": {"which": "adamw", "params": {"lr": rng.choice([1e-4, 5e-4, 1e-3]), "weight_decay": rng.choice([0.0, 0.05])}},
                                  **({} if tiny else {"schd_cf": {"which": "cos_linear_warmup", "params": {"num_warmup_steps": rng.choice([0, 1, 2.5, 10])}}})}},
            "training": {"trainer_params": {"gradient_clip_val": rng.choice([0.5, 1.0, 3.0]),
                                            **({} if tiny else {"max_epochs": rng.randint(1, 400)})}}}

def test_seed_004_any_value():
    rng = random.Random(4)
    for _ in range(DRAWS):
        s = draw_004(rng)
        cfg, _, method = full("neuro", None, s)                  # the seed names its method: system.which
        sp, lt = s["system"]["params"], s["loader"]["train"]
        assert method == cfg.method == "ema_jepa"
        bb = sp["vision_backbone_cf"]["which"]
        with torch.device("meta"): enc = create_encoder(cfg.encoder, 1, **{**cfg.encoder_kw, "img_size": 32})   # shapes only
        assert (enc.embed_dim, len(enc.blocks), enc.blocks[0].attn.num_heads) == VITS[bb], bb   # as built, not as named
        assert (cfg.batch_size, cfg.sampler) == (lt["batch_size"], "study" if lt["use_study_sampler"] else "random")
        assert cfg.views["remove_background"] == cfg.method_kw["remove_background"] == lt["collate_fn"]["remove_background"]
        assert cfg.method_kw["patch_drop_rate"] == lt["collate_fn"]["patch_drop_rate"]
        assert (cfg.views["window_probs"], cfg.views["augment"]) == (s["dataset"]["params"]["ct_window_probs"], s["dataset"]["params"]["augment"])
        assert (cfg.method_kw["pred_dim"], cfg.method_kw["pred_depth"], cfg.method_kw["momentum"]) == (
            sp["predictor_cf"]["dim"], sp["predictor_cf"]["depth"], sp["ema_beta"])
        assert (cfg.lr, cfg.weight_decay, cfg.grad_clip) == (sp["opt_cf"]["params"]["lr"], sp["opt_cf"]["params"]["weight_decay"],
                                                             s["training"]["trainer_params"]["gradient_clip_val"])
        # max_epochs and warmup: steps once the run knows its series (n) and processes (world): ceil(epochs × n / (batch × world))
        E, W = s["training"]["trainer_params"]["max_epochs"], sp["schd_cf"]["params"]["num_warmup_steps"]
        assert (cfg.epochs, cfg.warmup_epochs) == (E, W)
        n, world = rng.randint(1, 200_000), rng.choice([1, 2, 4, 8, 16])
        r = resolve_run(dataclasses.replace(cfg, views={k: v for k, v in cfg.views.items() if k != "norm_stats"}), range(n), world)
        per_step = lt["batch_size"] * world                      # the guide accumulates no gradients
        assert r.steps == max(1, -(-E * n // per_step)), (E, n, per_step, r.steps)
        assert r.warmup_steps == math.ceil(W * n / per_step), (W, n, per_step, r.warmup_steps)
    cls = {"system": {"which": "VisionClassificationSystem", "params": {"model_hyperparams": {"pooler_cf": {"which": "aggregate_then_classify"},
                                                                                               "proj_params": {"out_dim": 3}}}}}
    with pytest.raises(ValueError, match="seed key 'system.which' is 'VisionClassificationSystem': it configures seed 004's .* `sslmed train --recipe neuro --seed-config FILE`"):
        full("neuro", None, cls)             # a pretraining translation cannot hold it; sslmed train hands such a file to the classifier
    with pytest.raises(ValueError, match="the seed config trains 'ema_jepa', but the method asked for is 'lejepa'"):
        full("neuro", "lejepa", {"system": {"which": "VisionPretrainingSystem"}})

# ---------------------------------------------------------------- a translated run starts, through the CLI's own function
TINY = {"angio": ["dataset=phantom", 'data={"n": 16, "size": 64}', "views.size=64"],
        "fundus": ["dataset=phantom", 'data={"n": 16, "size": 64}', "views.size=64", "views.local_size=32", "views.grids=[4, 2, 1]",
                   "encoder=resnet18"],
        "ecg": ["dataset=phantom", 'data={"n": 16, "fs": 100}', 'views={"crop": 500, "local_crop": 250, "fs": 100, "n_global": 1, "n_local": 0}',
                "encoder_kw.patch_size=25"],
        "neuro": ["dataset=phantom", 'data={"n": 8, "size": 32}', "views.size=32", "views.local_size=16", "encoder_kw.img_size=32",
                  "encoder_kw.patch_size=16"]}
SEEDS = {"angio": (draw_000, "lejepa"), "fundus": (draw_002, "vicreg"), "ecg": (draw_001, "sigreg_jepa"), "neuro": (draw_004, None)}

@pytest.mark.parametrize("domain", list(SEEDS))
def test_translated_run_starts(domain, tmp_path, capsys):
    draw, method = SEEDS[domain]
    rng = random.Random(10 + len(domain))
    for i in range(RUNS):
        s = draw(rng, tiny=True)
        if domain == "fundus": method = ("vicreg", "triplet")[i % 2]
        f = tmp_path / f"seed{i}.yaml"
        f.write_text(yaml.safe_dump(s))
        over = TINY[domain] + ["steps=2", "warmup_steps=0", "accum_steps=1", "precision=fp32", "num_workers=0", "progress=false",
                               "log_every=1", "ckpt_every=2", "keep_every=null", f"out_dir={tmp_path / f'run{i}'}"]
        if domain in ("angio", "fundus", "ecg") and method != "triplet": over.append("batch_size=4")
        assert cli_train(recipe=domain, method=method, profile="full", seed_config=str(f), set=over) == 0
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert res["steps"] == 2 and math.isfinite(res["best"]), res        # two optimiser steps with a finite loss
        saved = yaml.safe_load((tmp_path / f"run{i}" / "config.yaml").read_text())
        if domain == "angio": assert saved["method_kw"]["n_global"] == saved["views"]["n_global"] == s["data"]["num_views"]
        if domain == "neuro": assert saved["encoder_kw"]["depth"] == 12      # vit_tiny: timm's ViT-Ti, through the CLI's path
        if domain == "fundus" and method == "triplet": assert "expander" not in saved["method_kw"]

def test_seed_004_stage_two_pretraining_on_new_data(tmp_path, capsys):
    "Seed 004's workflow 3: pretrain, then continue on other data from the checkpoint: load_backbone.ckpt_path (init_from) trains; "
    "resume_checkpoint (an exact resume) with other data says to use init_from."
    from sslmed.runs import load_checkpoint
    tiny = ["steps=2", "warmup_steps=0", "progress=false", "log_every=1", "ckpt_every=2", "batch_size=4", "data.size=32"]
    assert cli_train(recipe="neuro", method="ema_jepa", profile="smoke", set=[*tiny, "data.n=16", f"out_dir={tmp_path / 'stage1'}"]) == 0
    ck = tmp_path / "stage1" / "last.pt"
    stage2 = tmp_path / "stage2.yaml"
    stage2.write_text(yaml.safe_dump({"system": {"which": "VisionPretrainingSystem"}, "training": {"load_backbone": {"ckpt_path": str(ck)}}}))
    assert cli_train(recipe="neuro", profile="smoke", seed_config=str(stage2), set=[*tiny, "data.n=24", "seed=1", f"out_dir={tmp_path / 'stage2'}"]) == 0
    second = load_checkpoint(tmp_path / "stage2" / "last.pt")
    assert second["config"]["init_from"] == str(ck) and second["config"]["data"]["n"] == 24 and second["step"] == 2
    resume = tmp_path / "resume.yaml"
    resume.write_text(yaml.safe_dump({"training": {"resume_checkpoint": str(ck)}}))
    with pytest.raises(ValueError, match="as seed 004's stage 2, start a new run with init_from instead"):
        cli_train(recipe="neuro", method="ema_jepa", profile="smoke", seed_config=str(resume), set=[*tiny, "data.n=24", f"out_dir={tmp_path / 'r'}"])


def test_seed_004_max_epochs_run(tmp_path, capsys):
    "max_epochs 1 and a half-epoch warmup on 8 phantom studies of 3 series at batch 16: ceil(24 / 16) = 2 steps, 1 of warmup, as the run starts."
    f = tmp_path / "seed.yaml"
    f.write_text(yaml.safe_dump({"system": {"which": "VisionPretrainingSystem", "params": {"vision_backbone_cf": {"which": "vit_tiny"},
                                  "schd_cf": {"params": {"num_warmup_steps": 0.5}}}},
                                 "loader": {"train": {"batch_size": 16, "use_study_sampler": False}},
                                 "training": {"trainer_params": {"max_epochs": 1, "precision": "32"}}}))
    over = TINY["neuro"] + ["num_workers=0", "progress=false", "log_every=1", "ckpt_every=1", f"out_dir={tmp_path / 'run'}"]
    assert cli_train(recipe="neuro", profile="full", seed_config=str(f), set=over) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    n = 8 * 3                                                    # NeuroPhantom: n studies of n_series=3 series
    assert res["steps"] == saved["steps"] == math.ceil(n / 16) == 2 and saved["warmup_steps"] == math.ceil(0.5 * n / 16) == 1
    assert saved["epochs"] == 1 and isinstance(saved["views"]["norm_stats"], dict)   # the full recipe's norm_stats: auto, measured
