#!/usr/bin/env python
"""Why F3's negative control fails in a domain: LeJEPA at λ = 0 against the recipe's λ, spectrum by spectrum.

F3 (`sslmed.reports.negative_control`) pools every evaluation embedding of a run; a neuro series is embedded once per CT
window (`Preprocessed`, groups = 3), so its pooled rank and SIGReg statistic also measure how far apart the windows lie.
This script takes the finished demo runs of one domain (seed 0: LeJEPA at λ = 0, at the recipe's λ, and random init) in
a checkout where `sslmed paper --profile demo` ran, and measures effective rank and standardised SIGReg statistic of the
backbone and of the projector output (the embedding SIGReg acts on in training) on the test set, per window, with the
network's BatchNorm layers in eval mode (running statistics, as F3) and in train mode (batch statistics of the recipe's
batch size, as the training loss saw them). Writes `benchmarks/results/negative_control_<domain>-<machine>.csv`.

A second table takes the projector output on what SIGReg saw in training — the first global view of the training
items, BatchNorm in train mode — and gives SIGReg's own raw statistic (no standardisation; the loss's value) averaged
over random batches of N = 16 ... 1024, beside an N(0, I) sample of the same shape, and the scale-free effective rank
and standardised statistic F3 reports: `negative_control_<domain>_views-<machine>.csv`.

    python benchmarks/negative_control.py /path/to/clone --domain neuro     # about five minutes on 2 CPU cores

The committed `negative_control_neuro*-amd-epyc-2c.csv` measured b859d87's neuro runs (batches of 16, where the control
failed); since 3c01bd9 neuro's SIGReg methods train batches of 32 and the control holds (data_cards/phantom_neuro.md).
"""
import argparse, copy, dataclasses
from pathlib import Path
import pandas as pd
import torch
from torch.utils.data import DataLoader
from sslmed.core import machine_tag
from sslmed.domain import get_domain
from sslmed.features import Preprocessed, collate_items
from sslmed.protocols import eval_datasets, load_run, method_head, run_path
from sslmed.runs import load_backbone, load_checkpoint
from sslmed.sigreg import SIGReg
from sslmed.train import build_dataset, build_method
from sslmed.spectra import embedding_spectrum

def embed_test(net, cfg, test, train_mode: bool) -> torch.Tensor:
    "Test embeddings (N, groups·D) in batches of the recipe's size, BatchNorm in train or eval mode (no update kept)."
    m = Preprocessed(copy.deepcopy(net), get_domain(cfg.domain).eval_tf(**cfg.views_kw)).train(train_mode)
    loader = DataLoader(test, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate_items, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): return torch.cat([m(x) for x, _ in loader])

def spectra(run, variant, test, windows, num_slices=256):
    cfg, _ = load_run(run)
    if (Path(run) / "last.pt").is_file():  # a trained run: its backbone and the projector behind it, from one checkpoint
        head = method_head(Path(run) / "last.pt", cfg)
        nets = {"backbone": head[0], "projector": head}
    else: nets = {"backbone": load_backbone(Path(run) / "backbone.pt")}  # random init has no projector
    rows = []
    for part, net in nets.items():
        for bn in ("eval", "train"):
            x = embed_test(net, cfg, test, bn == "train")
            g = len(windows); xs = x.reshape(len(x), g, -1)
            for k, w in enumerate(windows):
                s = embedding_spectrum(xs[:, k], num_slices, step=0)
                rows.append(dict(variant=variant, run=Path(run).name, part=part, batchnorm=bn, window=w, n=s.n, dim=s.dim,
                                 effective_rank=round(s.effective_rank, 3), sigreg_standardized=round(s.sigreg_standardized, 3)))
    return rows

def batch_statistic(z, n: int, reps: int = 50, num_slices: int = 256) -> float:
    "SIGReg's raw statistic (the loss's value) averaged over `reps` random batches of `n` rows of `z`."
    sig, g = SIGReg(num_slices), torch.Generator().manual_seed(0)
    return float(torch.stack([sig(z[torch.randperm(len(z), generator=g)[:n]], k) for k in range(reps)]).mean())

def training_view_rows(run, variant, n_items: int, sizes=(16, 64, 256, 1024)):
    "The projector output on the first global view of `n_items` training items (BatchNorm in train mode), by SIGReg's loss and F3's diagnostics."
    cfg, _ = load_run(run)
    method, views = build_method(dataclasses.replace(cfg, init_from=None), get_domain(cfg.domain))
    method.load_state_dict(load_checkpoint(Path(run) / "last.pt")["model"]); method.train()
    ds, b, zs = build_dataset(cfg), cfg.batch_size, []
    with torch.no_grad():
        for i0 in range(0, n_items, b):
            x, _ = collate_items([ds[i] for i in range(i0, min(i0 + b, n_items))])
            zs.append(method.projector(method.encoder(views(x, generator=torch.Generator().manual_seed(i0))[0])))
    return embedding_rows(torch.cat(zs), variant, sizes)

def embedding_rows(z, variant, sizes):
    s = embedding_spectrum(z, 256, step=0)
    return dict(embedding=variant, n=len(z), dim=z.shape[1], effective_rank=round(s.effective_rank, 3),
                sigreg_standardized=round(s.sigreg_standardized, 3), **{f"sigreg_raw_N{n}": round(batch_statistic(z, n), 3) for n in sizes})

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="a checkout where `sslmed paper --profile demo` trained its runs")
    ap.add_argument("--domain", default="neuro"); ap.add_argument("--profile", default="demo"); ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    root = Path(a.root)
    _, test = eval_datasets(a.domain, a.profile, a.seed, root)
    cfg = run_path(a.domain, "lejepa", a.profile, a.seed, {}, root)[0]
    windows = list(cfg.views_kw.get("windows") or ["all"])
    runs = {"λ=0": run_path(a.domain, "lejepa", a.profile, a.seed, {"method_kw.lamb": 0.0}, root)[1],
            f"λ={cfg.method_kw['lamb']:g} (recipe)": run_path(a.domain, "lejepa", a.profile, a.seed, {}, root)[1],
            "random init": run_path(a.domain, "random", a.profile, a.seed, {}, root)[1]}
    rows = [r for v, run in runs.items() for r in spectra(run, v, test, windows)]
    out = Path(__file__).parent / "results" / f"negative_control_{a.domain}-{machine_tag()}.csv"
    pd.DataFrame(rows).to_csv(out, index=False)
    print(pd.DataFrame(rows).drop(columns="run").to_string(index=False)); print(f"\nwrote {out}")
    n = len(test)
    views = [training_view_rows(run, f"{v}: projector, training views", n) for v, run in runs.items() if v != "random init"]
    dim = views[0]["dim"]
    views.append(embedding_rows(torch.randn(n, dim, generator=torch.Generator().manual_seed(1)), f"N(0, I) in {dim} dimensions", (16, 64, 256, 1024)))
    out = out.with_name(f"negative_control_{a.domain}_views-{machine_tag()}.csv")
    pd.DataFrame(views).to_csv(out, index=False)
    print(pd.DataFrame(views).to_string(index=False)); print(f"\nwrote {out}")

if __name__ == "__main__": main()
