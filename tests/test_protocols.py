"""pretrain → evaluate end to end on a throwaway copy of the recipes; the second pretrain reuses the run, changed code makes new features."""
import shutil
from pathlib import Path
import sslmed.protocols as P
from sslmed.domain import get_domain
from conftest import ROOT

def test_pretrain_is_cached_and_evaluate_scores_every_label(tmp_path, monkeypatch):
    (tmp_path / "nbs" / "experiments").mkdir(parents=True); (tmp_path / "pyproject.toml").write_text("")
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    over = {"steps": 3, "batch_size": 8, "data.n": 32, "encoder_kw.depth": 1, "log_every": 1}
    run = P.pretrain("ecg", "lejepa", "smoke", seed=0, overrides=over, root=tmp_path)
    mtime = (run / "backbone.pt").stat().st_mtime_ns
    assert P.pretrain("ecg", "lejepa", "smoke", seed=0, overrides=over, root=tmp_path) == run
    assert (run / "backbone.pt").stat().st_mtime_ns == mtime          # reused, not retrained
    other = P.pretrain("ecg", "lejepa", "smoke", seed=1, overrides=over, root=tmp_path)
    assert other != run                                               # another seed is another run
    monkeypatch.setitem(get_domain("ecg").eval_sizes, "smoke", dict(train=48, test=32))
    res = P.evaluate(run, "smoke", seed=0, root=tmp_path)
    assert sorted(res.label.unique()) == ["rhythm", "superclass"] and set(res.probe) == {"linear", "knn"}
    assert res.auroc.between(0, 1).all() and (res.n_test == 32).all()
    assert list((tmp_path / "runs/features/smoke").glob("*.pt")), "features were not cached"
    n_features = len(list((tmp_path / "runs/features/smoke").glob("*.pt")))
    (tmp_path / "sslmed").mkdir(); (tmp_path / "sslmed" / "phantoms.py").write_text("# changed\n")
    # runs key on the training code that is imported (tests/test_slurm_runs.py edits it in a copy); features on root's source
    assert P.pretrain("ecg", "lejepa", "smoke", seed=0, overrides=over, root=tmp_path) == run
    P.embed(run, "smoke", seed=0, root=tmp_path)
    assert len(list((tmp_path / "runs/features/smoke").glob("*.pt"))) > n_features  # ... and new features

def test_features_follow_the_recipe_data_not_only_the_weights(tmp_path, monkeypatch):
    "A random-init run has the same weights whatever the recipe's data: changing the phantom must not reuse its features."
    import torch, yaml
    (tmp_path / "nbs" / "experiments").mkdir(parents=True); (tmp_path / "pyproject.toml").write_text("")
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    monkeypatch.setitem(get_domain("neuro").eval_sizes, "smoke", dict(train=8, test=4))
    run = P.pretrain("neuro", "random", "smoke", seed=0, overrides={"encoder_kw.depth": 1}, root=tmp_path)
    before = P.embed(run, "smoke", seed=0, root=tmp_path)[1].x
    path = tmp_path / "recipes/smoke/neuro.yaml"
    rec = yaml.safe_load(path.read_text()); rec["data"]["lesion_scale"] = 1.5   # larger findings, same weights
    path.write_text(yaml.safe_dump(rec))
    after = P.embed(run, "smoke", seed=0, root=tmp_path)[1].x
    assert before.shape == after.shape and not torch.allclose(before, after), "stale features from the old phantom"
    assert torch.equal(P.embed(run, "smoke", seed=0, root=tmp_path)[1].x, after)   # and the new ones are cached
