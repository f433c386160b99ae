"""Seed 004's classification system end to end: a pretraining run's frozen backbone, a classification YAML as the seed writes it,
`sslmed train --recipe neuro --seed-config` training the AB-MIL head in both pooler modes, one prediction per test study, the
head saved and loaded back to the same predictions, and a key that cannot be honoured refused by name."""
import json
import numpy as np, pytest, torch, yaml
from sslmed.cli import main
from sslmed.config import recipe
from sslmed.domains.neuro import NeuroPhantom
from sslmed.mil import study_bags
from sslmed.mil_train import ClassifyConfig, load_classifier, predict_studies, series_features
from sslmed.train import fit

POOLERS = {"classify_then_aggregate": "instance", "aggregate_then_classify": "aggregate"}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    "A short supervised pretraining on larger phantom lesions (the smoke recipe's network, 80 steps)."
    d = tmp_path_factory.mktemp("pre")
    fit(recipe("neuro", "supervised", "smoke", [f"out_dir={d / 'run'}", "progress=false", "data.n=128", "data.lesion_scale=2",
                                                 "steps=80", "lr=2e-3"]))
    return d


@pytest.mark.parametrize("pooler", list(POOLERS))
def test_classification_yaml_trains_per_study(pretrained, pooler, capsys):
    f = pretrained / f"{pooler}.yaml"
    f.write_text(yaml.safe_dump({"system": {"which": "VisionClassificationSystem", "params": {
        "model_hyperparams": {"pooler_cf": {"which": pooler}, "proj_params": {"out_dim": 3}}, "loss_cf": {"which": "bce"}}},
        "training": {"load_backbone": {"ckpt_path": str(pretrained / "run"), "remove_prefix": "student_encoder."},
                     "trainer_params": {"max_epochs": 150}}}))
    n_test = 60
    over = ["n_train=120", f"n_test={n_test}", "data.lesion_scale=2", "data.n_series=3", f"out_dir={pretrained / pooler}"]
    assert main(["train", "--recipe", "neuro", "--seed-config", str(f), "--set", *over]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    truth = NeuroPhantom(n_test, seed=20_000, size=32, lesion_scale=2).study_labels["findings"]   # the test studies, counted apart
    assert s["mode"] == POOLERS[pooler] and s["n_test_studies"] == len(truth) == n_test and s["n_train_studies"] == 120
    assert min(s["train_loss"]) < s["train_loss"][0]                                      # the head learns: its loss falls
    head, c, saved = load_classifier(s["out_dir"])
    assert (c.mode, c.out_dim, c.epochs) == (POOLERS[pooler], 3, 150)
    _, fte, _ = series_features(c, store=None)
    bags, y = study_bags(fte, "findings")
    assert len(bags) == n_test and np.array_equal(y, truth.numpy())                        # the same studies, the same labels
    p = predict_studies(head, bags)
    assert p.shape == (n_test, 3)                                                           # one prediction per study and finding
    from sklearn.metrics import roc_auc_score
    assert abs(roc_auc_score(y[:, 2], p[:, 2]) - saved["metrics"]["auroc/mass"]) < 1e-9     # saved -> loaded: the same scores
    print(pooler, {k: round(v, 3) for k, v in saved["metrics"].items() if k.startswith("auroc")})


def test_a_key_it_cannot_honour_is_named(tmp_path, pretrained):
    f = tmp_path / "cls.yaml"
    f.write_text(yaml.safe_dump({"system": {"which": "VisionClassificationSystem", "params": {"loss_cf": {"which": "mse"}}},
                                 "training": {"load_backbone": {"ckpt_path": str(pretrained / "run")}}}))
    with pytest.raises(ValueError, match="seed key 'system.params.loss_cf.which' is 'mse': mse, mae and rmse regress a continuous label"):
        main(["train", "--recipe", "neuro", "--seed-config", str(f)])
    f.write_text(yaml.safe_dump({"system": {"which": "VisionClassificationSystem", "params": {"model_hyperparams": {"proj_params": {"out_dim": 2}}}},
                                 "training": {"load_backbone": {"ckpt_path": str(pretrained / "run")}}}))
    with pytest.raises(ValueError, match="'out_dim' \\(seed 004's proj_params.out_dim\\) is 2, but the label 'findings' has 3 outputs"):
        main(["train", "--recipe", "neuro", "--seed-config", str(f), "--set", "n_train=20", "n_test=10"])
