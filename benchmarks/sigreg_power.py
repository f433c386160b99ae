#!/usr/bin/env python
"""How hard SIGReg penalises a dimensional collapse, by batch size: the loss's raw statistic on rank-k Gaussians.

An embedding that spans only k of its K dimensions (an isotropic Gaussian in a random k-dimensional subspace) is fed to
`SIGReg` (256 slices, the demo recipes' setting) in batches of N rows, as the loss sees one view of a batch. Its scale
is the best of four (total variance K times 0.36, 0.64, 1, 1.44: the collapse is allowed its most favourable scale),
and the statistic is averaged over 40 batches. An N(0, I) sample gives about 1 at every N; the excess of rank k over
full rank is what the regulariser charges for the collapse. Writes `benchmarks/results/sigreg-power_<machine>.{csv,md}` (not `sigreg_*`: that is the
--grid table F7 reads).

    python benchmarks/sigreg_power.py        # about 20 s on one CPU core
"""
from pathlib import Path
import pandas as pd
import torch
from sslmed.core import machine_tag
from sslmed.sigreg import SIGReg

def mean_statistic(n: int, k: int, dim: int, scale: float, reps: int = 40, num_slices: int = 256) -> float:
    "SIGReg's statistic averaged over `reps` batches of `n` rows of a rank-`k` Gaussian in `dim` dimensions of variance `scale²·dim/k` per axis."
    g = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0][:, :k]
    sig = SIGReg(num_slices)
    return sum(sig(torch.randn(n, k, generator=g) @ basis.T * scale * (dim / k) ** 0.5, r).item() for r in range(reps)) / reps

def main():
    rows = []
    for dim in (16, 64):
        for n in (16, 32, 64, 128, 256):
            for k in [k for k in (2, 4, 8, 16, 32, 64) if k <= dim]:
                rows.append(dict(dim=dim, N=n, rank=k, statistic=min(mean_statistic(n, k, dim, s) for s in (0.6, 0.8, 1.0, 1.2))))
    df = pd.DataFrame(rows)
    full = df[df["rank"] == df.dim].set_index(["dim", "N"]).statistic
    df["excess_over_full_rank"] = df.statistic - [full[(d, n)] for d, n in zip(df.dim, df.N)]
    out = Path(__file__).parent / "results" / f"sigreg-power_{machine_tag()}"
    df.round(3).to_csv(out.with_suffix(".csv"), index=False)
    wide = df.pivot_table(index=["dim", "N"], columns="rank", values="statistic").round(2)
    out.with_suffix(".md").write_text(f"# SIGReg's statistic on rank-k Gaussians, best of four scales, mean of 40 batches ({machine_tag()})\n\n"
                                      "Rows: embedding width K and batch rows N; columns: rank k. N(0, I) gives about 1.\n\n" + wide.reset_index().astype(object).fillna("").to_markdown(index=False) + "\n")
    print(wide.to_string()); print(f"wrote {out}.csv and .md")

if __name__ == "__main__": main()
