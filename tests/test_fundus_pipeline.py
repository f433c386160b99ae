"""Seed 002's pipeline end to end on tiny fundus phantom runs: a `sampler: pairs` triplet run really trains on anchor-positive
pairs; abstention on the fine-tuned triplet and SiCoVa (vicreg) models (temperature from a 10 % hold-out, thresholds
0.50 -> 0.95 by 0.05, acc/prec/rec/F1/kappa); CAM fine-tuning with the L1 penalty and refined CAMs; the full recipe's
triplet settings."""
import warnings
from pathlib import Path
import numpy as np, pytest, torch
from sslmed.core import assert_margin, project_root
from sslmed.domains.fundus import FundusPhantom, FundusFinetuneAug
from sslmed.train import fit
from sslmed.config import recipe
from sslmed.selective import abstention_sweep
from sslmed.protocols import finetune_selective, finetune_cam_eval, seed_thresholds

ROOT = project_root(Path(__file__).parent)
TINY = ["steps=2", "warmup_steps=1", "precision=fp32", "num_workers=0", "device=cpu", "progress=false", "ckpt_every=2",
        "keep_every=null", "log_every=1"]

class Recorded(torch.utils.data.Dataset):
    "A dataset that records every index it is asked for, in order."
    def __init__(self, ds): self.ds, self.seen = ds, []
    def __len__(self): return len(self.ds)
    @property
    def labels(self): return self.ds.labels
    def __getitem__(self, i):
        self.seen.append(int(i))
        return self.ds[i]

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "A 2-step triplet run with `sampler: pairs` (its data order recorded) and a 2-step SiCoVa run, on the smoke phantom."
    torch.set_num_threads(1)
    t = tmp_path_factory.mktemp("fundus_runs")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = recipe("fundus", "triplet", "smoke", [*TINY, "sampler=pairs", "batch_size=8", f"out_dir={t / 'triplet'}"])
        ds = Recorded(FundusPhantom(64, seed=5, size=96))
        fit(cfg, dataset=ds)
        out["triplet"], out["seen"], out["grades"] = t / "triplet", ds.seen, np.asarray(ds.labels["grade"])
        fit(recipe("fundus", "vicreg", "smoke", [*TINY, "batch_size=8", "method_kw.expander=64", f"out_dir={t / 'vicreg'}"]))
        out["vicreg"] = t / "vicreg"
    return out

def test_pairs_sampler_run_draws_anchor_positive_pairs(runs):
    "Every batch the trainer loaded is 4 pairs of two different images of one grade (not a uniform draw)."
    seen, g = np.asarray(runs["seen"]), runs["grades"]
    assert len(seen) == 2 * 8, len(seen)
    pairs = seen.reshape(-1, 2)
    assert (g[pairs[:, 0]] == g[pairs[:, 1]]).all(), g[pairs]
    assert (pairs[:, 0] != pairs[:, 1]).all()
    # a uniform draw of 8 from these grades pairs up this well with a small probability: the property is not luck
    p_same = sum((np.sum(g == c) / len(g)) ** 2 for c in np.unique(g))
    assert p_same ** len(pairs) < 1e-2

def check_selective(table, sel, n_test):
    assert table.threshold.round(2).tolist() == seed_thresholds().tolist()
    for col in ("accuracy", "precision", "recall", "f1", "kappa", "coverage", "temperature", "method"):
        assert col in table.columns, col
    assert (np.diff(table.coverage) <= 1e-12).all() and table.coverage.iloc[0] <= 1
    assert sel.temperature > 0 and table.n_holdout.iloc[0] >= 20 and table.n_test.iloc[0] == n_test
    kept = table.n_kept.iloc[0]
    assert kept == round(table.coverage.iloc[0] * n_test)

@pytest.mark.parametrize("method", ["triplet", "vicreg"])
def test_abstention_on_finetuned_models(runs, method):
    "Seed 002's abstention on the fine-tuned model: its own hold-out fits T; the sweep is what abstention_sweep gives on its logits."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table, sel = finetune_selective(runs[method], "grade", "smoke", epochs=1, lr=1e-3, augment=FundusFinetuneAug())
    assert (table.method == method).all() and (table.task == "multiclass").all()
    check_selective(table, sel, 128)
    assert_margin(f"{method}: temperature scaling does not worsen the test NLL much", sel.nll_before + 0.05 - sel.nll_after, 0.0)

def test_cam_finetuning_pipeline(runs):
    "One call from a run to a fine-tuned CAM model and refined test CAMs; the L1 weight shrinks the maps."
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for w in (0.0, 1.0):
            rows[w], res, cams = finetune_cam_eval(runs["vicreg"], "grade", "smoke", epochs=1, lr=1e-3, cam_weight=w)
            K = cams.maps.shape[1]
            assert K == 5 and cams.maps.shape[0] == 128 and cams.refined.shape == cams.maps.shape
            assert cams.refined.min() >= 0 and cams.refined.max() <= 1 + 1e-6
            assert res.model.head.n_classes == 5 and rows[w]["probe"] == "finetune_cam"
    assert_margin("CAM-L1 in fine-tuning: mean |map| without / with the penalty", rows[0.0]["cam_l1"] / rows[1.0]["cam_l1"], 1.2)

def test_full_recipe_triplet_is_seed_002():
    "128 anchor-positive pairs per step, SGD lr 0.01 momentum 0.9; SiCoVa 256 x 8 = 2048, lr 0.003, wd 1e-4."
    t = recipe("fundus", "triplet", "full")
    assert (t.sampler, t.batch_size, t.accum_steps, t.optimizer, t.lr, t.momentum) == ("pairs", 256, 1, "sgd", 0.01, 0.9)
    v = recipe("fundus", "vicreg", "full")
    assert (v.batch_size * v.accum_steps, v.lr, v.weight_decay, v.optimizer) == (2048, 0.003, 1e-4, "lars")

def test_messidor2_is_an_external_test_set_of_the_full_profile(tmp_path, monkeypatch):
    "The full profile names Messidor-2 (dataset specs, roots) and scores each APTOS-trained probe on it: its own T1 column."
    import shutil
    from sslmed.domain import get_domain
    from sslmed.protocols import evaluate, profile_datasets, mean_sd_table, external_datasets
    from sslmed.domains.fundus import Messidor2
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    dom = get_domain("fundus")
    for name in ("aptos", "messidor2"):
        dom.fixtures[name](tmp_path / name, seed=0)
        monkeypatch.setenv(f"SSLMED_DATA_{name.upper()}", str(tmp_path / name))
    assert ("messidor2", "eval external") in {(s["dataset"], s["role"]) for s in profile_datasets("full", tmp_path)}
    assert list(external_datasets("fundus", "full", tmp_path)) == ["messidor2"] and external_datasets("fundus", "smoke", tmp_path) == {}
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(recipe("fundus", "random", "smoke", [*TINY, f"out_dir={run}"]))
        rows = evaluate(run, "full", root=tmp_path, probes=("linear", "knn"))
    ext = rows[rows.label == "grade@messidor2"]
    n_gradable, n_good = len(Messidor2(tmp_path / "messidor2")), len(Messidor2(tmp_path / "messidor2", on_error="skip"))
    assert n_good < n_gradable   # the fixture's corrupt photograph: skip mode removes it rather than repeat a neighbour
    assert sorted(ext.probe) == ["knn", "linear"] and (ext.n_test == n_good).all(), ext
    assert (ext.n_train == rows[rows.label == "grade"].n_train.iloc[0]).all()    # the probes of the APTOS train split
    assert ext.kappa.notna().all()
    table = mean_sd_table(rows.assign(seed=0))
    assert any("grade@messidor2" in str(c) for c in table.columns), table.columns

def test_finetuning_augments_by_default_as_the_seed(runs):
    "Fundus fine-tuning uses FundusFinetuneAug unless told otherwise: the default equals passing it, and differs from augment=False."
    kw = dict(epochs=1, lr=1e-3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default, explicit, off = (finetune_selective(runs["vicreg"], "grade", "smoke", augment=a, **kw)[1]
                                  for a in (None, FundusFinetuneAug(), False))
    assert default.temperature == explicit.temperature and default.table.equals(explicit.table)
    assert default.temperature != off.temperature
