#!/usr/bin/env python
"""What T1's 95% intervals cost (`sslmed.intervals.cell_intervals`): AUROC by ranks against sklearn's `roc_auc_score`.

`cell_intervals` scores every test-set bootstrap resample of every seed of every cell: with the demo's 200 resamples,
3-6 seeds per cell and 1-5 classes per label, the demo's ECG alone made ~76,000 binary AUROCs (profiled). Until 2026-12-07 each went
through `sklearn.metrics.roc_auc_score`, whose input validation costs milliseconds per call; `sslmed.metrics` now
computes the same number from ranks (Mann-Whitney U, ties counted half). This script times both on the same
synthetic per-seed predictions (`sslmed.intervals.synthetic_predictions`-like, with the demo's test sizes and
label shapes), side by side in one process, and checks that the intervals agree. Ratios are the result; absolute
seconds belong to this machine. Writes `benchmarks/results/intervals-<machine>.csv` (`sslmed.core.machine_tag()`)
and prints a table.

    python benchmarks/intervals.py            # about a minute on 2 CPU cores
"""
import argparse, time, warnings
from pathlib import Path
import numpy as np
import pandas as pd
from sklearn import metrics as skm
import sslmed.metrics as M
from sslmed.core import machine_tag
from sslmed.intervals import cell_intervals

# the demo's test sets (recipes/demo, each domain's eval_sizes) and label shapes: (domain, label, task, classes, n_test)
CASES = [("angio", "stenosis", "binary", 1, 2048), ("ecg", "superclass", "multiclass", 5, 512),
         ("neuro", "findings", "multilabel", 3, 384)]

def predictions(domain, label, task, k, n, methods=("lejepa", "supervised", "random"), seeds=range(6), seed=0):
    "Per-seed test predictions with some signal, one shared test set per cell (as the demo's phantoms give)."
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n) if task == "binary" else rng.integers(0, k, n) if task == "multiclass" else rng.integers(0, 2, (n, k))
    hot = np.eye(k)[y] if task == "multiclass" else y
    rows = []
    for i, m in enumerate(methods):
        for s in seeds:
            logit = (0.5 + 0.5 * i) * (2 * hot - 1) + rng.normal(0, 1.5, hot.shape)
            p = np.exp(logit) / np.exp(logit).sum(1, keepdims=True) if task == "multiclass" else 1 / (1 + np.exp(-logit))
            rows.append(dict(domain=domain, label=label, probe="linear", method=m, seed=s, task=task, metric="auroc", y=y, probs=p))
    return pd.DataFrame(rows)

def sklearn_auroc(y, s, what):
    "The previous `_binary_auroc`: sklearn's roc_auc_score."
    if y.min() == y.max(): return float("nan")
    return float(skm.roc_auc_score(y, s))

def timed(fn):
    t0 = time.perf_counter(); out = fn(); return out, time.perf_counter() - t0

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples per seed (the demo's n_boot)")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    ranks, rows = M._binary_auroc, []
    for domain, label, task, k, n in CASES:
        preds = predictions(domain, label, task, k, n)
        new, t_new = timed(lambda: cell_intervals(preds, n_boot=a.n_boot))
        M._binary_auroc = sklearn_auroc
        try: old, t_old = timed(lambda: cell_intervals(preds, n_boot=a.n_boot))
        finally: M._binary_auroc = ranks
        cols = ["mean", "lo", "hi"]
        rows.append(dict(domain=domain, label=label, task=task, classes=k, n_test=n, cells=len(new), n_boot=a.n_boot,
                         sklearn_s=round(t_old, 3), ranks_s=round(t_new, 3), speedup=round(t_old / t_new, 1),
                         max_abs_diff=float(np.abs(old[cols].to_numpy() - new[cols].to_numpy()).max()),
                         machine=machine_tag()))
    df = pd.DataFrame(rows)
    out = Path(__file__).parent / "results" / f"intervals-{machine_tag()}.csv"
    df.to_csv(out, index=False)
    print(df.to_markdown(index=False))
    print(f"\nwritten {out}")

if __name__ == "__main__":
    main()
