"""T1 intervals (sslmed.intervals): coverage of the combined interval, the probe round trip, compare_tables on the committed smoke and demo tables."""
import math, shutil
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sslmed.core import assert_margin, project_root
from sslmed.intervals import cell_intervals, combine_interval, compare_tables, synthetic_predictions, verdicts
from sslmed.probes import linear_probe

SMOKE = Path(project_root()) / "figures" / "smoke" / "tables"

def _shared_test_cell(rng, n=150, d=1.0, jitter=0.02):
    "Three seeds scored on ONE test set drawn from a binormal model (true AUROC Φ(d/√2)); seeds only jitter the scores."
    y = rng.integers(0, 2, n)
    x = d * y + rng.normal(size=n)
    return pd.DataFrame([dict(domain="angio", label="stenosis", probe="linear", method="m", seed=s, task="binary", y=y,
                              probs=1 / (1 + np.exp(-(x + jitter * rng.normal(size=n))))) for s in range(3)])

def test_coverage_needs_the_bootstrap_when_seeds_share_a_test_set():
    "The combined interval covers the true AUROC about 95% of the time; the seeds' t-interval alone almost never does."
    rng, truth = np.random.default_rng(0), stats.norm.cdf(1.0 / math.sqrt(2))
    hits, seed_only = [], []
    for rep in range(40):
        c = cell_intervals(_shared_test_cell(rng), n_boot=100, seed=rep).iloc[0]
        hits.append(c.lo <= truth <= c.hi)
        h = stats.t.ppf(0.975, 2) * math.sqrt(c.v_seed)
        seed_only.append(c["mean"] - h <= truth <= c["mean"] + h)
    assert_margin("intervals: coverage of the combined 95% interval (shared test set, 40 cells)", np.mean(hits), 0.8)
    assert_margin("intervals: coverage of the seeds-only t-interval (shared test set)", np.mean(seed_only), 0.5, above=False)

def test_coverage_with_seed_noise_only():
    "Seed effects and no test-set noise: the interval is the t-interval over seeds and covers the true mean about 95%."
    rng = np.random.default_rng(1)
    hits = []
    for _ in range(2000):
        s = 0.7 + 0.03 * rng.normal(size=3)
        r = combine_interval(s, np.repeat(s[:, None], 2, 1))
        hits.append(r["lo"] <= 0.7 <= r["hi"])
    assert_margin("intervals: t-interval coverage over 2000 cells (nominal 0.95, lower bound 0.93)", np.mean(hits), 0.93)
    assert_margin("intervals: t-interval coverage over 2000 cells (upper bound 0.97)", np.mean(hits), 0.97, above=False)

def test_probe_round_trip():
    "Predictions from linear_probe give cells whose mean is the mean of the probe's own AUROCs, and a learnt signal beats random."
    g, rows, own = torch.Generator().manual_seed(0), [], {}
    for method, signal in (("random", 0.0), ("lejepa", 1.2)):
        for s in range(3):
            y = torch.randint(0, 2, (300,), generator=g)
            x = torch.randn(300, 8, generator=g); x[:, 0] += signal * y
            r = linear_probe(x[:200], y[:200].numpy(), "binary", val=0.2, test=(x[200:], y[200:].numpy()), seed=s)
            own.setdefault(method, []).append(r.metrics["auroc"])
            rows.append(dict(domain="angio", label="stenosis", probe="linear", method=method, seed=s, task="binary",
                             score_task=r.task, y=r.labels, probs=r.probs))
    t = cell_intervals(pd.DataFrame(rows), n_boot=200).set_index("method")
    for m, v in own.items(): assert abs(t.loc[m, "mean"] - np.mean(v)) < 1e-12
    assert not t.shared_test.any()
    test = verdicts(t.reset_index()).set_index("method")
    assert test.loc["lejepa", "verdict"] == "beats"

@pytest.mark.skipif(not SMOKE.is_dir(), reason="no committed smoke tables")
def test_compare_committed_smoke_tables(tmp_path):
    "The committed smoke tables against themselves: nothing moved; one edited cell of each kind is listed, nothing else."
    assert compare_tables(SMOKE, SMOKE).empty
    fresh = tmp_path / "fresh"; shutil.copytree(SMOKE, fresh)
    t = pd.read_csv(fresh / "T1_main_linear.csv")
    t.loc[t.method == "lejepa", "angio / stenosis"] = 0.999
    t.to_csv(fresh / "T1_main_linear.csv", index=False)
    t2 = pd.read_csv(fresh / "T2_label_efficiency.csv")
    t2 = t2.iloc[1:]                     # one (…, label_fraction) row gone
    t2.to_csv(fresh / "T2_label_efficiency.csv", index=False)
    (fresh / "F7_sigreg_cost.csv").unlink()
    res = compare_tables(fresh, SMOKE)
    got = sorted(zip(res.table, res.reason))
    assert got == [("F7_sigreg_cost", "table only in committed"), ("T1_main_linear", "changed (no interval)"),
                   ("T2_label_efficiency", "row only in committed")], got
    row = res[res.table == "T1_main_linear"].iloc[0]
    assert row.row == "method=lejepa" and row.column == "angio / stenosis" and row.fresh == 0.999
    assert "label_fraction=0.01" in res[res.table == "T2_label_efficiency"].row.iloc[0]

def test_compare_bad_folders(tmp_path):
    "A missing folder is named; a committed folder without tables is refused."
    with pytest.raises(FileNotFoundError, match="committed tables folder .*nowhere"): compare_tables(tmp_path, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="holds no CSV"): compare_tables(tmp_path, tmp_path)

def test_interval_table_moves_are_judged_by_the_committed_interval(tmp_path):
    "Long interval tables: a fresh mean inside the committed interval is not listed, one outside is, with the interval."
    t = cell_intervals(synthetic_predictions("angio", "stenosis"), n_boot=100)
    (tmp_path / "c").mkdir(); (tmp_path / "f").mkdir()
    t.to_csv(tmp_path / "c" / "T1.csv", index=False)
    f = t.copy(); f["mean"] = [t.hi[0] + 1e-3, (t.lo[1] + t.hi[1]) / 2 + 0.9 * (t.hi[1] - t.lo[1]) / 2]
    f.to_csv(tmp_path / "f" / "T1.csv", index=False)
    res = compare_tables(tmp_path / "f", tmp_path / "c")
    assert list(res.reason) == ["outside interval"] and "method=lejepa" in res.row[0]
    assert abs(res.hi[0] - t.hi[0]) < 1e-9

DEMO = Path(project_root()) / "figures" / "demo" / "tables"

def test_verdict_flip_on_committed_demo_tables(tmp_path):
    "A flipped verdict in the committed demo (a cell where supervised beats random init -> overlaps) is one 'verdict changed' cell, not a row missing on each side."
    assert compare_tables(DEMO, DEMO).empty
    fresh = tmp_path / "fresh"; shutil.copytree(DEMO, fresh)
    v = pd.read_csv(fresh / "T1_vs_random.csv")
    row = v.method == "supervised"
    col = next(c for c in v.columns[1:] if v.loc[row, c].item() == "beats")   # the positive control holds somewhere
    v.loc[row, col] = "overlaps"; v.to_csv(fresh / "T1_vs_random.csv", index=False)
    res = compare_tables(fresh, DEMO)
    assert list(zip(res.table, res.row, res.column, res.reason)) == [
        ("T1_vs_random", "method=supervised", col, "verdict changed")], res

def test_verdict_in_a_long_interval_table(tmp_path):
    "In a long table of `verdicts` the verdict is compared as a value: a flip is listed, the row is still matched."
    t = verdicts(cell_intervals(synthetic_predictions("angio", "stenosis", methods={"random": 0.0, "lejepa": 1.5}), n_boot=50))
    (tmp_path / "c").mkdir(); (tmp_path / "f").mkdir()
    t.to_csv(tmp_path / "c" / "V.csv", index=False)
    t.assign(verdict="overlaps").to_csv(tmp_path / "f" / "V.csv", index=False)
    res = compare_tables(tmp_path / "f", tmp_path / "c")
    assert list(res.reason) == ["verdict changed"] and "method=lejepa" in res.row[0] and res.committed[0] == "beats"
