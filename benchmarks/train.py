#!/usr/bin/env python
"""Training throughput per recipe: steps/s and samples/s of the trainer, and whether the data loader keeps up.

For each (domain, method) it runs `fit` on the recipe for a few steps (the first `--warmup` steps are not timed) and,
side by side, iterates the same batches through the DataLoader alone. On a GPU it also reports peak memory.
Prints a table and writes `benchmarks/results/train_<machine>.csv`.

    python benchmarks/train.py                              # smoke recipes on this machine
    python benchmarks/train.py --profile full --pairs angio:lejepa --steps 30   # a full recipe (GPU; phantoms via --set)
"""
import argparse, os, tempfile, time
from pathlib import Path
import pandas as pd
import torch

PAIRS = ["angio:lejepa", "ecg:sigreg_jepa", "fundus:vicreg", "neuro:ema_jepa", "ecg:lejepa", "angio:supervised"]

def loader_rate(cfg, n_batches):
    "Samples/s of the data loader alone over the run's first batches."
    from sslmed.train import build_dataset
    from sslmed.samplers import ResumableBatches
    ds = build_dataset(cfg)
    rb = ResumableBatches(len(ds), cfg.batch_size, cfg.seed)
    dl = torch.utils.data.DataLoader(ds, batch_sampler=list(rb.from_step(0, n_batches)), num_workers=cfg.num_workers)
    t0, n = time.perf_counter(), 0
    for x, _ in dl: n += len(x)
    return n / (time.perf_counter() - t0)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--pairs", nargs="+", default=PAIRS, help="domain:method pairs")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--set", nargs="*", default=[], help="extra overrides for every run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    from sslmed.config import recipe
    from sslmed.train import fit
    from sslmed.core import device_info, machine_tag
    info, tag, rows = device_info(), machine_tag(), []
    for pair in a.pairs:
        domain, method = pair.split(":")
        with tempfile.TemporaryDirectory() as d:
            cfg = recipe(domain, method, a.profile, [f"steps={a.steps}", f"log_every={a.warmup}", f"ckpt_every={10**9}",
                                                     f"out_dir={d}", "progress=false", *a.set])
            if torch.cuda.is_available(): torch.cuda.reset_peak_memory_stats()
            fit(cfg)
            m = pd.read_csv(Path(d) / "metrics.csv")
            timed = m[m.step > a.warmup]               # rows logged after the untimed warm-up window
            train_sps = float(timed.throughput.mean())
            load_sps = loader_rate(cfg, a.steps)
        row = dict(machine=tag, device=info["gpu"] or info["cpu"], torch_threads=info["torch_threads"], profile=a.profile,
                   domain=domain, method=method, encoder=cfg.encoder, batch_size=cfg.batch_size, precision=cfg.precision,
                   train_samples_s=train_sps, train_steps_s=train_sps / cfg.batch_size, loader_samples_s=load_sps,
                   loader_keeps_up=load_sps > train_sps,
                   gpu_peak_mib=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None)
        rows.append(row)
        print(f"{domain:>7} {method:<11} {cfg.encoder:<22} {row['train_samples_s']:8.1f} samples/s "
              f"{row['train_steps_s']:6.2f} steps/s | loader {load_sps:8.1f} samples/s "
              f"({'keeps up' if row['loader_keeps_up'] else 'BOTTLENECK'})", flush=True)
    out = Path(a.out) / f"train_{tag}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp"); pd.DataFrame(rows).to_csv(tmp, index=False); os.replace(tmp, out)
    print(f"\n{info}\nwrote {out}")

if __name__ == "__main__":
    main()
