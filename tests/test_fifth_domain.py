"""A fifth domain is one module (what its notebook exports), its recipe and its card: registered in a copy of the
checkout without an edit to any file that was there, it runs through the smoke profile of every experiment notebook
that loops over domains, and appears in T1."""
import hashlib, json, os, shutil, subprocess, sys, textwrap
from pathlib import Path
import pandas as pd
import pytest
from conftest import ROOT

# what `nbs/domains/15_toy.ipynb` would export: a phantom, views, an evaluation transform and the registration
TOY_MODULE = '''
"""A tiny test domain: two-channel signals whose class is the frequency of a sine in noise."""
from __future__ import annotations
import numpy as np
import torch
from sslmed.phantoms import Phantom
from sslmed.views import MultiView, Compose, RandomTimeCrop, AmplitudeScale, GaussianNoise
from sslmed.domain import Domain, Task, register_domain, phantom_factory

__all__ = ["ToyPhantom", "toy_views", "toy_eval", "DOMAIN"]

class ToyPhantom(Phantom):
    "Two-channel signals of `length` samples: a sine whose frequency is the class, plus noise."
    label_names = {"kind": ["slow", "medium", "fast"]}
    show_aspect = 2.0

    def __init__(self, n: int, seed: int = 0, length: int = 64):
        super().__init__(n, seed)
        self.length = length

    def draw_labels(self, rng): return {"kind": int(rng.integers(3))}

    def render(self, rng, labels):
        t = np.arange(self.length) / self.length
        f = (2, 5, 9)[labels["kind"]]
        x = np.stack([np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)), np.cos(2 * np.pi * f * t)])
        return torch.from_numpy((x + 0.3 * rng.standard_normal(x.shape)).astype(np.float32)), {}

    def show(self, x, labels, ax):
        ax.plot(x[0].numpy(), lw=0.8); ax.set_xticks([]); ax.set_yticks([])

def toy_views(crop: int = 48, local_crop: int = 24, n_global: int = 2, n_local: int = 0) -> MultiView:
    "Random crops of the signal, scaled and with noise added."
    def tf(length):
        return Compose(RandomTimeCrop(length), AmplitudeScale((0.8, 1.2)), GaussianNoise((0.0, 0.05)), sample_ndim=2,
                       sample_shape="(2, T)", channels=2, name="toy_views")
    return MultiView(tf(crop), tf(local_crop) if n_local else None, n_global, n_local)

def toy_eval(**_):
    "The evaluation transform: none (the encoder takes the whole signal)."
    return lambda x: x

DOMAIN = register_domain(Domain(
    "toy", in_chans=2, views=toy_views, eval_tf=toy_eval, label_key="kind", tasks={"kind": Task("multiclass", 3, "auroc")},
    datasets={"phantom": phantom_factory(ToyPhantom)}, encoder="vit1d_tiny",
    eval_sizes={"smoke": dict(train=64, test=48)}, cards={"phantom": "phantom_toy"}))
'''

TOY_RECIPE = """\
# toy, smoke: ToyPhantom (2 x 64 samples), a 1-block 1D ViT-tiny; seconds
dataset: phantom
data: {n: 128, length: 64}
encoder: vit1d_tiny
encoder_kw: {patch_size: 4, depth: 1}
views: {crop: 48, local_crop: 24, n_global: 2, n_local: 2}
batch_size: 16
steps: 4
lr: 1.0e-3
warmup_steps: 1
log_every: 1
ckpt_every: 2
methods:
  lejepa: {method_kw: {proj_hidden: 32, proj_dim: 16, num_slices: 32, lamb: 0.05}}
  sigreg_jepa:
    views: {n_global: 1, n_local: 0, crop: 64}
    method_kw: {pred_dim: 16, pred_depth: 1, pred_heads: 2, proj_hidden: 32, proj_dim: 16, num_slices: 32, lamb: 0.05}
  vicreg: {views: {n_local: 0}, optimizer: lars, lr: 0.3, weight_decay: 1.0e-6, method_kw: {expander: 32}}
  triplet: {views: {n_global: 1, n_local: 0}, method_kw: {dim: 16}}
  ema_jepa: {views: {n_global: 1, n_local: 0, crop: 64}, method_kw: {pred_dim: 16, pred_depth: 1, pred_heads: 2}}
  supervised: {views: {n_global: 1, n_local: 0}}
  random: {views: {n_global: 1, n_local: 0}}
"""

TOY_CARD = """\
# ToyPhantom (test domain)

**Class:** `sslmed.domains.toy.ToyPhantom(n, seed=0, length=64)`, written by `tests/test_fifth_domain.py` into a copy of
the checkout. Two-channel signals whose class (slow, medium, fast) is the frequency of a sine in Gaussian noise.
Procedural: no patient data; it exists to show that a new domain needs no edit to the library.
"""

# the smoke profile, narrowed to the new domain (a profile names domains only to choose a subset) and to what it has
NOTEBOOKS = {"main_results": {}, "embeddings": {}, "lambda_sweep": {}, "training_dynamics": {}, "learning_curves": {},
             "label_efficiency": {"finetune_domains": ["toy"]}, "views_and_phantoms": {"cam_runs": {}}}

DRIVER = """
import json, sys
from sslmed.paper import run_notebook
for name, extra in json.loads(sys.argv[1]).items():
    print(json.dumps(run_notebook(name, "smoke", extra={"domains": ["toy"], **extra})), flush=True)
"""


def digests(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def checkout(tmp_path):
    "A copy of what the library and `sslmed paper` read, without build output."
    for d in ("nbs", "data_cards", "recipes", "sslmed", "benchmarks/results"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_fifth_domain_runs_through_every_experiment_that_loops_over_domains(checkout):
    before = digests(checkout)
    new = {"sslmed/domains/toy.py": TOY_MODULE.lstrip(), "recipes/smoke/toy.yaml": TOY_RECIPE, "data_cards/phantom_toy.md": TOY_CARD}
    for rel, text in new.items():
        assert not (checkout / rel).exists(), rel  # only new files
        (checkout / rel).write_text(text)
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "SSLMED_JOBS": "2"}

    doms = subprocess.run([sys.executable, "-c", "from sslmed.domain import list_domains; print(list_domains())"],
                          cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    assert "'toy'" in doms.stdout and len(eval(doms.stdout)) == 5, doms.stdout + doms.stderr

    r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(NOTEBOOKS)], cwd=checkout, env=env, capture_output=True,
                       text=True, timeout=1500)
    rows = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    assert [x["notebook"] for x in rows] == list(NOTEBOOKS), r.stdout[-3000:] + r.stderr[-3000:]
    assert all(x["status"] == "ok" for x in rows), [x for x in rows if x["status"] != "ok"]

    tables = checkout / "figures/smoke/tables"
    t1 = pd.read_csv(tables / "T1_all_scores.csv")
    assert set(t1.domain) == {"toy"} and {"lejepa", "random"} <= set(t1.method) and t1.auroc.notna().all()
    assert "toy / kind" in (tables / "T1_main_linear.md").read_text()                    # T1, the headline table
    assert "toy / kind" in pd.read_csv(tables / "T3_lambda.csv").columns
    for t in ("T2_label_efficiency", "F3_spectra", "F9_learning_curves"): assert set(pd.read_csv(tables / f"{t}.csv").domain) == {"toy"}, t
    manifest = json.loads((checkout / "figures/smoke/manifest.json").read_text())
    assert {"F5a_views_toy", "F5b_phantom_toy", "F2_training_curves", "F9_learning_curves"} <= set(manifest)
    for k, e in manifest.items(): assert set(e["data_cards"]) == {"phantom_toy"}, (k, e["data_cards"])  # from the registry

    after = digests(checkout)
    assert {k: v for k, v in after.items() if k in before} == before, "an existing file changed"
