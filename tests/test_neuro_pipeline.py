"Seed 004's pipeline in the trainer and the evaluation: study batches (resumable, reshuffled), background-token filtering with patch_drop_rate, study-level MIL."
import shutil, warnings
from pathlib import Path
import numpy as np, pytest, torch
from sklearn.metrics import roc_auc_score
from sslmed.core import assert_margin
from sslmed.data.core import DataWarning
from sslmed.domains.neuro import NeuroPhantom, NeuroStudies, volume_views, write_neuro_fixture
from sslmed.encoders import create_encoder
from sslmed.methods import EMAJEPA
from sslmed.protocols import evaluate, pretrain
from sslmed.config import TrainConfig
from sslmed.train import fit

ROOT = Path(__file__).resolve().parents[1]


class Recording(torch.utils.data.Dataset):
    "A dataset that records the order in which the trainer asks for its items."
    def __init__(self, ds): self.ds, self.asked = ds, []
    def __len__(self): return len(self.ds)
    def __getitem__(self, i): self.asked.append(int(i)); return self.ds[i]
    @property
    def labels(self): return self.ds.labels


def cfg(tmp_path, name, **kw):
    "EMA-JEPA on foreground tokens with study batches, tiny."
    return TrainConfig(**{**dict(domain="neuro", encoder="vit3d_tiny", encoder_kw=dict(img_size=16, patch_size=4, depth=1),
                                 views=dict(size=16, n_global=1, remove_background=True), method="ema_jepa",
                                 method_kw=dict(pred_dim=32, pred_depth=1, pred_heads=2, remove_background=True, patch_drop_rate=0.1),
                                 sampler="study", batch_size=6, steps=6, warmup_steps=1, log_every=1, ckpt_every=2, device="cpu",
                                 progress=False, out_dir=str(tmp_path / name)), **kw})


def batches(asked, size): return [asked[i:i + size] for i in range(0, len(asked), size)]


def test_fit_trains_on_whole_studies_and_resumes_the_same_batches(tmp_path):
    ds = NeuroPhantom(8, seed=0, size=16, n_series=3)          # 8 studies of 3 series: 2 studies (6 series) a micro-batch
    study = ds.labels["study"].numpy()
    straight = Recording(ds); fit(cfg(tmp_path, "straight"), straight)
    got = batches(straight.asked, 6)
    assert len(got) == 6
    for b in got: assert sorted(b) == sorted(np.flatnonzero(np.isin(study, study[b]))) and len(set(study[b])) == 2
    epoch = lambda bs: {s for b in bs for s in study[b]}
    assert epoch(got[:4]) == set(range(8)) and epoch(got[4:6]) != epoch(got[:2])    # 4 steps an epoch, then a new permutation
    first = Recording(ds); fit(cfg(tmp_path, "resumed", steps=4), first)           # stopped after 4 steps
    again = Recording(ds); fit(cfg(tmp_path, "resumed", resume=True), again)       # resumed: steps 4 and 5
    assert batches(first.asked, 6) == got[:4] and batches(again.asked, 6) == got[4:]


@pytest.fixture(scope="module")
def fixture_views(tmp_path_factory):
    "Views with a foreground channel of the five fixture studies' series (32³ at 6 mm), 8 a batch, 8 batches."
    root = tmp_path_factory.mktemp("neuro") / "studies"
    write_neuro_fixture(root, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ds = NeuroStudies(root, spacing=(6, 6, 6), max_crop_size=(4, 4, 4), patch_size=8)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
    vv = volume_views(32, n_global=1, remove_background=True)
    g = torch.Generator().manual_seed(0)
    return [vv(x[torch.randint(len(x), (8,), generator=g)], generator=g)[0] for _ in range(8)]


def test_air_tokens_never_reach_the_encoders_and_drops_match_the_rate(fixture_views):
    torch.manual_seed(0)
    m = EMAJEPA(create_encoder("vit3d_tiny", 1, img_size=32, patch_size=8, depth=1), pred_dim=32, pred_depth=1, pred_heads=2,
                remove_background=True, patch_drop_rate=0.1)
    seen = []
    for enc in (m.encoder, m.teacher):
        enc.forward_tokens = (lambda f, who: lambda x, keep=None: (seen.append((who, keep)), f(x, keep))[1])(enc.forward_tokens, enc is m.teacher)
    fg_total = kept_total = 0
    for step, v in enumerate(fixture_views):
        seen.clear()
        with torch.no_grad(): m([v], step=step, generator=torch.Generator().manual_seed(step))
        head = torch.nn.functional.max_pool3d(v[:, 1:], 8, 8).flatten(1) > 0                 # tokens with any head voxel
        for _, keep in seen: assert head.gather(1, keep).all()                              # no air-only token, student or teacher
        (_, k_teacher), = [s for s in seen if s[0]]
        n_fg = head.sum(1)
        assert k_teacher.shape[1] == int((n_fg - torch.round(0.1 * n_fg)).min())          # the rate, on the smallest sample
        fg_total += int(n_fg.sum()); kept_total += k_teacher.numel()
    effective = 1 - kept_total / fg_total
    print(f"foreground tokens not encoded at patch_drop_rate 0.1, 8 batches of 8 fixture views 32³/8³: {effective:.3f}")
    assert_margin("effective foreground-token drop at patch_drop_rate 0.1 (rate + dense-batch trim)", effective, 0.6, above=False)
    assert effective >= 0.09


def test_neuro_evaluation_scores_studies_with_mil_in_both_modes(tmp_path):
    "On the phantom (studies of 3 series): one row per MIL mode and label, scored over studies, AUROC as sklearn computes it."
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    run = pretrain("neuro", "random", "smoke", 0, root=tmp_path)
    r = evaluate(run, "smoke", 0, probes=("mil-aggregate", "mil-instance"), root=tmp_path, predictions=True)
    assert list(r.probe) == ["mil-aggregate", "mil-instance"] and set(r.label) == {"findings"}
    n_test_studies = 32                                              # the smoke test set: NeuroPhantom(n=32), 3 series each
    for _, row in r.iterrows():
        assert len(row.y) == n_test_studies and row.probs.shape == (n_test_studies, 3)
        assert row.auroc == pytest.approx(roc_auc_score(row.y, row.probs, average="macro"))

@pytest.mark.parametrize("patch", [[16, 8, 8], [4, 16, 16]])
def test_seed_004_token_size_is_an_encoder_option(patch, tmp_path):
    "Seed 004's tokens hold 1,024 voxels ('Tokenized Images [N, 1024]'): an anisotropic encoder_kw.patch_size gives them, and trains."
    import math, warnings
    from sslmed.config import recipe as _recipe
    from sslmed.encoders import create_encoder
    from sslmed.train import fit as _fit
    assert math.prod(patch) == 1024
    enc = create_encoder("vit3d_tiny", 1, img_size=32, patch_size=patch, depth=1)
    assert enc.patch_embed.kernel_size == tuple(patch) and enc.patch_embed.weight[0].numel() == 1024
    assert enc.grid_size((1, 1, 32, 32, 32)) == tuple(32 // p for p in patch)
    cfg = _recipe("neuro", "ema_jepa", "smoke", ["steps=2", f"encoder_kw.patch_size={patch}", "progress=false", "data.n=16",
                                                 "batch_size=4", "views.remove_background=true", "method_kw.remove_background=true",
                                                 "method_kw.patch_drop_rate=0.1", f"out_dir={tmp_path / 'run'}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isfinite(_fit(cfg)["best"])


def test_file_name_window_chooses_the_training_window_on_the_fixture(tmp_path):
    "The reader's window label (from the file names) reaches the views through the trainer's make_views: a series named "
    "`..._BoneWindow...` is always seen through the bone window (checked against the reader's own window_hu), the others draw."
    from sslmed.domains.neuro import WINDOWS, window_hu
    from sslmed.train import make_views
    write_neuro_fixture(tmp_path / "neuro")
    ds = NeuroStudies(tmp_path / "neuro", spacing=(6, 6, 6), max_crop_size=(4, 4, 4), patch_size=8)
    x, lab = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    names = [it["path"].name for it in ds.items]
    bone = [i for i, n in enumerate(names) if "bone" in n.lower()]
    assert [names[i] for i in bone] == ["ct_BoneWindow.nii.gz"] and lab["window"][bone].tolist() == [2]
    views = volume_views(16, n_global=1, windows=["brain", "blood", "bone"], window_probs=[0.7, 0.15, 0.15], augment=False)
    pick, seen = views.global_tf.tfs[1], {i: set() for i in range(len(ds))}
    for step in range(30):
        make_views(views, x, seed=0, step=step, offset=0, chunk=len(x), meta=lab)
        for i, w in enumerate(pick.last): seen[i].add(w)
    named = {i: ["brain", "blood", "bone"][int(w)] for i, w in enumerate(lab["window"]) if w >= 0 and not ds.items[i]["modality"] == "mri"}
    assert named and all(seen[i] == {w} for i, w in named.items())                          # always its own window
    assert any(len(seen[i]) > 1 for i in range(len(ds)) if i not in named)                  # the others draw by window_probs
    pick.named = [named.get(i) for i in range(len(ds))]                                       # the window op itself, on the series
    got = pick.apply(x, torch.Generator().manual_seed(0))
    for i, w in named.items():
        want = torch.from_numpy(window_hu(x[i].numpy().astype(np.float64), *WINDOWS[w])).float() / 255
        assert (got[i] - want).abs().max() <= 0.5 / 255 + 1e-6, (names[i], w)


def test_full_recipe_views_on_the_fixture_measure_norm_stats_at_the_start(tmp_path):
    "The full recipe's views (norm_stats: auto, named windows) train 2 steps on the fixture's CT and MR series: the statistics are "
    "measured on its training series when the run starts, CT's and MR's own, and saved in config.yaml."
    import yaml
    from sslmed.config import recipe
    from sslmed.domains.neuro import window_stats
    write_neuro_fixture(tmp_path / "neuro")
    small = ["data.max_crop_size=[4, 4, 4]", "data.patch_size=8", "data.spacing=[6, 6, 6]", "data.cache_dir=null",
             "encoder=vit3d_tiny", 'encoder_kw={"img_size": 16, "patch_size": 8, "depth": 1}', "views.size=16", "views.local_size=8",
             'method_kw={"pred_dim": 32, "pred_depth": 1, "pred_heads": 2, "remove_background": true, "patch_drop_rate": 0.1}',
             "batch_size=3", "sampler=random", "steps=2", "warmup_steps=0", "precision=fp32", "num_workers=0", "ckpt_every=2",
             "progress=false", f"data_root={tmp_path / 'neuro'}", f"out_dir={tmp_path / 'run'}"]
    cfg = recipe("neuro", "ema_jepa", "full", small)
    assert cfg.views["norm_stats"] == "auto"
    res = fit(cfg)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["views"]["norm_stats"]
    ds = NeuroStudies(tmp_path / "neuro", spacing=(6, 6, 6), max_crop_size=(4, 4, 4), patch_size=8)
    assert res["steps"] == 2 and saved == window_stats(ds, ["brain", "blood", "bone"]) and set(saved["mr"]) == {"brain", "blood", "bone"}
