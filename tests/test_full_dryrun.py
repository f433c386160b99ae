"""The full profile end to end on fixtures (`sslmed paper --profile full --dry-run`), and the full recipes' device
settings on CPU: bf16 autocast and `torch.compile`, two steps each."""
import json, os, shutil, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest
import yaml
from conftest import ROOT
from sslmed.core import assert_margin
from sslmed.paper import PAPER_IDS
from sslmed.protocols import fixture_writer, root_env
from sslmed.train import fit
from sslmed.config import recipe

pytestmark = pytest.mark.filterwarnings("ignore")
DEVICE_RECIPE = ("ecg", "sigreg_jepa")   # the 1D ViT 384×8 with its 192×8 predictor: the cheapest full recipe on CPU


@pytest.fixture(scope="module")
def recipe_data(tmp_path_factory):
    "A fixture of the dataset the device recipe trains on, and its environment variable."
    dom, method = DEVICE_RECIPE
    ds = recipe(dom, method, "full").dataset
    writer, src = fixture_writer(dom, ds)
    if writer is None: pytest.fail(src)
    where = tmp_path_factory.mktemp("data") / ds
    out = writer(where, seed=0)
    return root_env(ds), str(out if isinstance(out, (str, Path)) else where)


def two_steps(tmp_path, env, name, **over):
    "Train the device recipe for 2 steps of 2 samples on CPU; the per-step metrics."
    dom, method = DEVICE_RECIPE
    keys = dict(steps=2, batch_size=2, accum_steps=1, num_workers=0, log_every=1, device="cpu", progress="false",
                out_dir=str(tmp_path / name), **over)
    cfg = recipe(dom, method, "full", [f"{k}={v}" for k, v in keys.items()])
    os.environ[env[0]] = env[1]
    try: fit(cfg)
    finally: os.environ.pop(env[0], None)
    return pd.read_csv(tmp_path / name / "metrics.csv")


def test_bf16_autocast_on_cpu(recipe_data, tmp_path):
    "bf16 (the full recipes' precision) trains on CPU: finite, close to fp32, and not fp32 (autocast did act)."
    assert recipe(*DEVICE_RECIPE, "full").precision == "bf16"
    bf = two_steps(tmp_path, recipe_data, "bf16", precision="bf16")
    fp = two_steps(tmp_path, recipe_data, "fp32", precision="fp32")
    assert len(bf) == len(fp) == 2 and bf.loss.notna().all() and (bf.loss.abs() < 1e6).all(), bf
    first_bf, first_fp = bf.loss.iloc[0], fp.loss.iloc[0]
    assert first_bf != first_fp, "bf16 gave the fp32 loss bit for bit: autocast did not run"
    assert_margin("bf16 vs fp32 first-step loss, relative difference", abs(first_bf - first_fp) / abs(first_fp), 0.1, above=False)


@pytest.mark.slow   # compiling the 1D ViT and its predictor took 412 s on 2 shared CPU cores (graph breaks in encoders.check_keep)
def test_torch_compile_on_cpu(recipe_data, tmp_path):
    "compile=true trains the same 2 steps as eager, to float tolerance (skipped, with the reason, without a C++ compiler)."
    cxx = os.environ.get("CXX", "g++")
    if not shutil.which(cxx):
        reason = f"torch.compile on CPU needs a C++ compiler; {cxx!r} is not on PATH"
        print(reason); pytest.skip(reason)
    t0 = time.time()
    comp = two_steps(tmp_path, recipe_data, "compiled", precision="fp32", compile="true")
    print(f"compiled 2 steps in {time.time() - t0:.0f} s")
    eager = two_steps(tmp_path, recipe_data, "eager", precision="fp32")
    assert comp.loss.notna().all() and len(comp) == 2
    assert_margin("compiled vs eager first-step loss, relative difference",
                  abs(comp.loss.iloc[0] - eager.loss.iloc[0]) / abs(eager.loss.iloc[0]), 1e-3, above=False)


# CI: every notebook of the full profile, each on one domain (together all four), so that the run fits the CI budget
# on 2 cores; `test_full_dry_run_everything` (slow) runs the full-dryrun profile as committed.
CI_GROUPS = {
    "main_results": {"domains": ["ecg"]},
    "embeddings": {"domains": ["ecg"]},
    "label_efficiency": {"domains": ["ecg"], "finetune_domains": ["ecg"]},
    "lambda_sweep": {"domains": ["ecg"]},
    "training_dynamics": {"domains": ["ecg"]},
    "learning_curves": {"domains": ["ecg"]},
    "selective_prediction": {"methods": ["lejepa", "random"]},                        # fundus
    "sigreg_design": {"domain": "angio", "slices": [1024], "t_maxes": [], "knots": [], "views": []},
    "views_and_phantoms": {"domains": ["angio", "neuro"], "cam_runs": {"angio": "lejepa"}},
}


def dry_run_copy(repo_copy, groups=None):
    "The checkout's recipes and profiles in a throwaway root; `groups` narrows the full-dryrun profile files."
    shutil.copytree(ROOT / "recipes", repo_copy / "recipes")
    prof = repo_copy / "nbs/experiments/profiles/full-dryrun"
    for name, extra in (groups or {}).items():
        f = prof / f"{name}.yaml"
        f.write_text(yaml.safe_dump({**yaml.safe_load(f.read_text()), **extra}, sort_keys=False))
    return repo_copy


def check_dry_run(root, r):
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    out = root / "figures/full-dryrun"
    m = json.loads((out / "manifest.json").read_text())
    assert {e["id"] for e in m.values()} == set(PAPER_IDS), sorted({e["id"] for e in m.values()})
    for name, e in m.items():
        assert e["profile"] == "full-dryrun", name
        for f in e["files"]: assert (out / f).stat().st_size > 0, f
    for md in (out / "tables").glob("*.md"): assert "dry run on fixtures, not paper results" in md.read_text(), md
    assert not (root / "figures/full").exists()                 # never over real full results
    assert sorted(p.stem for p in (root / "runs/full-dryrun").glob("*.ipynb")) == sorted(
        p.stem for p in (root / "nbs/experiments").glob("*.ipynb") if not p.name.startswith("_"))
    assert "Domain.fixtures" in r.stdout or "fallback" in r.stdout


def run_dry(root, timeout):
    exe = Path(sys.executable).parent / "sslmed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSLMED_DATA_")}
    t0 = time.time()
    r = subprocess.run([str(exe), "paper", "--profile", "full", "--dry-run"], cwd=root, capture_output=True, text=True,
                       timeout=timeout, env=env)
    print(f"dry run: {time.time() - t0:.0f} s\n{r.stdout[-3000:]}")
    return r


def test_full_dry_run_one_domain_per_notebook(repo_copy):
    root = dry_run_copy(repo_copy, CI_GROUPS)
    check_dry_run(root, run_dry(root, 3600))


@pytest.mark.slow
def test_full_dry_run_everything(repo_copy):
    root = dry_run_copy(repo_copy)
    check_dry_run(root, run_dry(root, 4 * 3600))


def test_missing_roots_fail_in_the_first_second(tmp_path):
    "`sslmed paper --profile full` without data: exit 2 naming every root, before any notebook or torch import."
    exe = Path(sys.executable).parent / "sslmed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSLMED_DATA_")}
    t0 = time.time()
    r = subprocess.run([str(exe), "paper", "--profile", "full"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    wall = time.time() - t0
    assert r.returncode == 2, r.stdout + r.stderr
    from sslmed.paper import recipe_roots
    for env_name in recipe_roots("full", ROOT): assert f"${env_name} is unset" in r.stderr, r.stderr
    assert_margin("seconds until `sslmed paper --profile full` fails without data", wall, 5.0, above=False)
