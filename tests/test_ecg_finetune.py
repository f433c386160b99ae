"""Seed 001's fine-tuning by task (`finetune.py --task rhythm`) on a PTB-XL fixture in its published layout: `sslmed
finetune` end to end (splits, the seed's metric names in TensorBoard and CSV, val/best_auc, the best-by-validation
checkpoint against an independent AUROC), an unknown task, a frozen backbone, an occupied output folder, optional wandb."""
import ast, contextlib, io, json, math, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from sslmed.cli import main
from sslmed.domains import ecg as E
from sslmed.finetune import Classifier
from sslmed.protocols import Preprocessed, finetune_task
from sslmed.train import fit
from sslmed.runs import load_backbone
from sslmed.config import recipe

pytestmark = pytest.mark.filterwarnings("ignore")
TINY = {"encoder_kw.depth": 1, "encoder_kw.embed_dim": 48, "encoder_kw.num_heads": 2, "method_kw.pred_dim": 24,
        "method_kw.pred_depth": 1, "method_kw.pred_heads": 2, "method_kw.proj_hidden": 64, "method_kw.num_slices": 64}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "A one-step run of the full ECG recipe (a tiny encoder) on a MIMIC-IV-ECG fixture, and an 80-record PTB-XL at 500 Hz."
    d = tmp_path_factory.mktemp("ecg_finetune")
    E.make_ptbxl_fixture(d / "ptbxl", n_records=80, rates=(500,))
    E.make_mimic_ecg_fixture(d / "mimic", n_records=4)
    over = dict(steps=1, batch_size=2, num_workers=0, log_every=1, device="cpu", progress="false", precision="fp32",
                out_dir=str(d / "run"), data_root=str(d / "mimic"), **TINY)
    fit(recipe("ecg", "sigreg_jepa", "full", [f"{k}={v}" for k, v in over.items()]))
    return d / "run", d / "ptbxl"


def cli(*args) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out): assert main(["finetune", *map(str, args)]) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


def tb_scalars(folder) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder)); acc.Reload()
    return {t: [e.value for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def expected_records(ptb: Path, task: str, folds) -> list:
    "ecg_ids of the folds with at least one statement of `task` and a finite signal, read from the CSVs and WFDB files directly."
    import wfdb
    st = pd.read_csv(ptb / "scp_statements.csv", index_col=0)
    db = pd.read_csv(ptb / "ptbxl_database.csv")
    fold = db.strat_fold.astype(float).astype(int)
    has = db.scp_codes.map(lambda s: any(st.loc[c, task] == 1 for c in ast.literal_eval(s)))
    finite = db.filename_hr.map(lambda f: bool(np.isfinite(wfdb.rdsamp(str(ptb / f))[0]).all()))  # skip mode drops the NaN-lead record
    assert not finite.all()  # the fixture's NaN-lead record is there to be dropped
    return db.ecg_id[fold.isin(folds) & has & finite].tolist()


def test_finetune_rhythm_as_seed_001(run):
    run_dir, ptb = run
    row = cli("--run", run_dir, "--task", "rhythm", "--data-dir", ptb, "--epochs", 3, "--batch-size", 16, "--device", "cpu",
              "--lr", 1e-3)
    out = run_dir / "finetune" / "rhythm_s0"
    assert row["out_dir"] == str(out) and (row["finetune_task"], row["label"], row["task"]) == ("rhythm", "rhythm", "multilabel")
    # splits: folds 1-8 / 9 / 10, records without a rhythm statement dropped as in the PTB-XL benchmark
    assert (row["n_train"], row["n_val"], row["n_test"]) == tuple(len(expected_records(ptb, "rhythm", f))
                                                                  for f in (range(1, 9), [9], [10]))
    classes = E.PTBXL_VOCABULARY["rhythm"]  # the task's twelve rhythm statements, whatever subset the records carry
    m = pd.read_csv(out / "metrics.csv")
    assert list(m.columns) == ["step", "loss", "lr", "val/auc", *[f"val/auc/{c}" for c in classes], "val/best_auc"]
    assert np.allclose(m["val/best_auc"], np.fmax.accumulate(m["val/auc"]))
    assert np.allclose(m["val/auc"], m[[f"val/auc/{c}" for c in classes]].mean(axis=1, skipna=True))
    tags = tb_scalars(out / "tb")
    for t in ("train/loss", "train/lr", "val/auc", "val/best_auc", "test/auc", *[f"test/auc/{c}" for c in classes]):
        assert t in tags, (t, sorted(tags))
    assert np.allclose(tags["val/best_auc"], m["val/best_auc"])
    # the best-by-validation checkpoint reproduces the test scores, against sklearn's AUROC per class
    ck = torch.load(out / "best.pt")
    assert ck["epoch"] == row["best_epoch"] == int(m["val/auc"].idxmax()) and ck["class_names"] == classes
    model = Classifier(Preprocessed(load_backbone(run_dir / "backbone.pt"), lambda x: x), nn.Linear(48, len(classes)))
    model.load_state_dict(ck["model"]); model.eval()
    test = E.PTBXL(ptb, "rhythm", split="test", sampling_rate=500, labels={"rhythm": "rhythm"}, on_error="skip")
    with torch.no_grad():
        items = [test[i] for i in range(len(test))]
        p = torch.sigmoid(model(torch.stack([x for x, _ in items]))).numpy()
    y = np.stack([lab["rhythm"].numpy() for _, lab in items])
    tm = pd.read_csv(out / "test_metrics.csv").iloc[0]
    per = {}
    for j, c in enumerate(classes):
        if 0 < y[:, j].sum() < len(y):
            per[c] = roc_auc_score(y[:, j], p[:, j])
            assert math.isclose(tm[f"test/auc/{c}"], per[c], abs_tol=1e-5) and math.isclose(row[f"auroc/{c}"], per[c], abs_tol=1e-5)
        else: assert math.isnan(tm[f"test/auc/{c}"])
    assert per and math.isclose(tm["test/auc"], np.mean(list(per.values())), abs_tol=1e-5)
    assert math.isclose(tags["test/auc"][-1], tm["test/auc"], abs_tol=1e-6)
    assert tm["val/best_auc"] == m["val/best_auc"].iloc[-1]


def test_unknown_task_names_the_known_ones(run):
    run_dir, ptb = run
    with pytest.raises(ValueError, match="unknown fine-tuning task 'beats' for domain 'ecg' on 'ptbxl'; known tasks: "
                                         "all, diagnostic, form, rhythm, subdiagnostic, superclass, superdiagnostic"):
        finetune_task(run_dir, "beats", data_dir=ptb)


def test_frozen_superdiagnostic_occupied_folder_and_optional_wandb(run, tmp_path):
    run_dir, ptb = run
    out = tmp_path / "sd"
    try: import wandb  # noqa: F401
    except ImportError: wandb = None
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        row = finetune_task(run_dir, "superdiagnostic", out_dir=out, epochs=2, batch_size=16, lr=1e-2, freeze_backbone=True,
                            wandb=True, data_dir=ptb, device="cpu")
    if wandb is None: assert any("wandb: true, but wandb is not installed" in str(x.message) for x in w)
    else: assert (out / "wandb").is_dir()
    assert row["label"] == "superdiagnostic" and {f"auroc/{c}" for c in ("CD", "HYP", "MI", "NORM", "STTC")} <= set(row)
    ck = torch.load(out / "best.pt")["model"]
    enc = load_backbone(run_dir / "backbone.pt").state_dict()
    assert all(torch.equal(ck[f"backbone.encoder.{k}"], v) for k, v in enc.items())      # frozen: the backbone is the run's
    with pytest.raises(FileExistsError, match="is not empty: pass overwrite=True"):
        finetune_task(run_dir, "superdiagnostic", out_dir=out, epochs=1, data_dir=ptb, device="cpu")
    again = finetune_task(run_dir, "superdiagnostic", out_dir=out, epochs=1, data_dir=ptb, device="cpu", overwrite=True)
    assert len(pd.read_csv(out / "metrics.csv")) == 1 and again["best_epoch"] == 0


def test_pretraining_logs_seed_001_metric_names(run):
    "The run above (full recipe, log_every 1) wrote every pretraining metric the seed's README lists, under its name."
    tags = tb_scalars(run[0] / "tb")
    for t in ("train/loss", "train/pred_loss", "train/sigreg_loss", "train/lr", "train/step_time", "train/throughput",
              "gradients/norm", "system/gpu_memory_mib"):
        assert t in tags and all(math.isfinite(v) for v in tags[t]), (t, sorted(tags))
    assert tags["train/step_time"][0] > 0 and tags["gradients/norm"][0] > 0


def test_converter_cli_shows_progress(tmp_path):
    "`sslmed-ecg-npy ROOT` (no --quiet) draws a tqdm bar over the records of record_list.csv and says what it wrote."
    E.make_mimic_ecg_fixture(tmp_path / "m", n_records=5, convert=False)
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out): E.ecg_npy.__wrapped__(str(tmp_path / "m"))
    assert "5/5" in err.getvalue(), err.getvalue()
    kept = len(E.MIMICECG(tmp_path / "m"))
    assert f"{kept} of 5 records converted" in out.getvalue() and kept == 5 - 1        # the fixture's NaN-lead record skipped
