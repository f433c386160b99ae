"""Every method trains every domain's smoke recipe (two steps, tiny data), in-process and from the command line."""
import json, os, subprocess, sys
import pytest
import torch
from sslmed.config import recipe
from sslmed.train import fit
from sslmed.runs import load_backbone, load_checkpoint
from sslmed.methods import METHODS
from sslmed.domain import list_domains

DOMAINS = list_domains()  # every registered domain
TINY = ["steps=2", "batch_size=4", "data.n=16", "log_every=1", "progress=false"]

@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("domain", DOMAINS)
def test_smoke_recipe_trains(domain, method, tmp_path):
    extra = ["data.n_series=1"] if domain == "neuro" else []
    res = fit(recipe(domain, method, "smoke", [*TINY, *extra, f"out_dir={tmp_path}"]))
    enc = load_backbone(tmp_path / "backbone.pt")           # the backbone loads back into create_encoder
    assert sum(p.numel() for p in enc.parameters()) > 0
    if method != "random":
        ck = load_checkpoint(tmp_path / "last.pt")
        assert ck["step"] == 2 and (tmp_path / "metrics.csv").is_file() and list((tmp_path / "tb").iterdir())

def test_recipe_from_the_command_line_with_bf16_and_swa(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sslmed.train", "--recipe", "ecg", "--method", "lejepa", "--profile", "smoke",
           "--set", *TINY, "precision=bf16", "swa=true", "swa_start=0.0", f"out_dir={tmp_path}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["steps"] == 2
    enc = load_backbone(tmp_path / "backbone.pt")            # the SWA average, loadable as an encoder
    assert torch.isfinite(enc(torch.randn(2, 12, 500))).all()

def test_unknown_recipe_method_is_named(tmp_path):
    with pytest.raises(ValueError, match="no recipe for method 'lejepaa'"):
        recipe("ecg", "lejepaa", "smoke")
