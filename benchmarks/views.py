#!/usr/bin/env python
"""Views per second for each domain's view builder: one call on a whole batch against the same ops one sample at a time.

Both modes run the same `MultiView` (same transforms, same number of views); "batched" passes a (B, ...) tensor, "per-sample"
loops over the batch and passes each (C, ...) sample. Fundus CLAHE (scikit-image, CPU, one image at a time in both modes)
is timed on its own row, as the preprocessing it is meant to be. Prints a table and writes
`benchmarks/results/views_<machine>.csv`, where <machine> names the CPU (or GPU with --device cuda) and the torch threads.
Times are the best of `--repeats` runs, the two modes taking turns, which is robust to other processes sharing the CPU.

    python benchmarks/views.py                 # CPU, default sizes (about a minute on 2 cores)
    python benchmarks/views.py --device cuda   # views made on the GPU
    python benchmarks/views.py --quick         # tiny sizes, a few seconds (smoke test)
"""
import argparse, csv, platform, re, time
from pathlib import Path
import torch
from sslmed.views import CLAHE
from sslmed.domains.angio import angio_views
from sslmed.domains.ecg import ecg_views
from sslmed.domains.fundus import fundus_views
from sslmed.domains.neuro import volume_views

def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()

def machine_name(device: str) -> str:
    "CPU (or GPU) model and torch threads, file-name safe."
    hw = torch.cuda.get_device_name(0) if device.startswith("cuda") else cpu_name()
    return re.sub(r"[^a-z0-9]+", "-", f"{hw}-{torch.get_num_threads()}threads".lower()).strip("-")[:80]

def cases(quick: bool, device: str):
    "Per domain: a view builder, a batch of inputs on `device` and the batch size."
    g = torch.Generator().manual_seed(0)
    s = 4 if quick else 1
    def disc(B, n):
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
        return (torch.rand(B, 3, n, n, generator=g) * 0.6 + 0.2) * ((yy ** 2 + xx ** 2) < 0.9)
    head = torch.full((128 // s,) * 3, -1000.0)
    head[16 // s:112 // s, 20 // s:108 // s, 20 // s:108 // s] = 40.0
    out = {
        "angiography": (angio_views(256 // s, 128 // s, n_global=2, n_local=2), torch.rand(16, 1, 512 // s, 512 // s, generator=g)),
        "fundus": (fundus_views(256 // s, clahe=False), disc(16, 512 // s)),
        "ecg": (ecg_views(2500 // s, fs=500 / s), torch.randn(64, 12, 5000 // s, generator=g) * 0.3),
        "volume": (volume_views(64 // s), (head + 10 * torch.randn(4, 1, *head.shape, generator=g))),
    }
    return {k: (mv, x.to(device)) for k, (mv, x) in out.items()}

def once(fn, device: str) -> float:
    if device.startswith("cuda"): torch.cuda.synchronize()
    t0 = time.perf_counter(); fn()
    if device.startswith("cuda"): torch.cuda.synchronize()
    return time.perf_counter() - t0

def timed(fns, device: str, repeats: int) -> list[float]:
    "Best-of-`repeats` seconds of each function, after a warm-up; the functions take turns, so they share the machine's load."
    for fn in fns: fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for ts, fn in zip(times, fns): ts.append(once(fn, device))
    return [min(ts) for ts in times]

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--quick", action="store_true", help="tiny inputs, for a smoke test")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    machine = machine_name(a.device)
    rows = []
    for domain, (mv, x) in cases(a.quick, a.device).items():
        B = x.shape[0]
        per_call = B * mv.n_views
        t_batch, t_single = timed([lambda: mv(x), lambda: [mv(xi) for xi in x]], a.device, a.repeats)
        for mode, t in (("batched", t_batch), ("per-sample", t_single)):
            rows.append({"machine": machine, "node": platform.node(), "cpu": cpu_name(), "torch_threads": torch.get_num_threads(),
                         "device": a.device, "domain": domain, "mode": mode, "batch": B, "views_per_sample": mv.n_views,
                         "input_shape": "x".join(map(str, x.shape[1:])), "seconds": round(t, 5),
                         "views_per_s": round(per_call / t, 1), "speedup": round(t_single / t, 2)})
    fundus = cases(a.quick, "cpu")["fundus"][1][:4]
    t_clahe, = timed([lambda: CLAHE()(fundus)], "cpu", a.repeats)
    rows.append({**rows[-1], "device": "cpu", "domain": "fundus CLAHE (preprocessing)", "mode": "per-sample (skimage)",
                 "batch": len(fundus), "views_per_sample": 1, "input_shape": "x".join(map(str, fundus.shape[1:])),
                 "seconds": round(t_clahe, 5), "views_per_s": round(len(fundus) / t_clahe, 1), "speedup": 1.0})

    cols = ["domain", "mode", "batch", "views_per_sample", "input_shape", "seconds", "views_per_s", "speedup"]
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print(f"machine: {machine} (node {platform.node()}), device {a.device}")
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows: print("  ".join(str(r[c]).ljust(width[c]) for c in cols))
    out = Path(a.out) / f"views_{machine}{'_quick' if a.quick else ''}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader(); w.writerows(rows)
    print(f"wrote {out}")

if __name__ == "__main__":
    main()
