#!/usr/bin/env python
"""Forward+backward time and peak memory of sslmed's `SIGReg` against the paper's Algorithm 1 as written.

Both get the same inputs and the same slices; the paper's 17 knots on [-5, 5] equal `SIGReg(t_max=5, n_points=9)`,
and the script checks that the two values agree before timing. CPU runs measure each case in a fresh subprocess
(peak resident memory above the inputs); GPU runs use CUDA events and `torch.cuda.max_memory_allocated`.
Prints a table and writes `benchmarks/results/sigreg_<machine>.csv`.

    python benchmarks/sigreg.py                    # the full grid: N in {512, 2048, 8192}, K in {128, 512}, M in {256, 1024, 4096}
    python benchmarks/sigreg.py --Ns 2048 --Ks 512 --Ms 1024   # the target case only
"""
import argparse, itertools, json, os, resource, statistics, subprocess, sys, time
from pathlib import Path
import torch

IMPLS = ("sslmed", "algorithm1")

def rss_bytes() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def make_fn(impl, n_slices):
    from sslmed.sigreg import SIGReg, sigreg_reference
    if impl == "sslmed":
        mod = SIGReg(num_slices=n_slices, t_max=5.0, n_points=9)
        return lambda x: mod(x, step=0)
    return lambda x: sigreg_reference(x, step=0, num_slices=n_slices, t_max=5.0, n_points=17)

def measure(impl, n, k, m, repeats, device):
    "Time (ms, median) and peak memory (MiB above the inputs) of one forward+backward; also the value."
    torch.manual_seed(0)
    x = torch.randn(n, k, device=device, requires_grad=True)
    fn = make_fn(impl, m)
    cuda = device.startswith("cuda")
    def step():
        x.grad = None
        loss = fn(x)
        loss.backward()
        return loss
    if cuda:
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        value = step().item(); torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = rss_bytes()
        value = step().item()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times = []
    for _ in range(repeats):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(); step(); b.record(); torch.cuda.synchronize(); times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter(); step(); times.append((time.perf_counter() - t0) * 1e3)
    return {"time_ms": statistics.median(times), "peak_mib": max(peak, 0) / 2**20, "value": value}

def naive_estimate_gib(n, m):
    "Rough peak of Algorithm 1: a handful of complex (N, M, 17) tensors live at once under autograd."
    return 6 * n * m * 17 * 8 / 2**30

def run_case(impl, n, k, m, repeats, device):
    if device == "cpu":  # a fresh process per case, so the resident-memory peak belongs to this case alone
        cmd = [sys.executable, __file__, "--worker", impl, str(n), str(k), str(m), "--repeats", str(repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0: return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:120]}
        return json.loads(out.stdout.strip().splitlines()[-1])
    try: return measure(impl, n, k, m, repeats, device)
    except torch.OutOfMemoryError: torch.cuda.empty_cache(); return {"error": "out of memory"}

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--Ns", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--Ks", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--Ms", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-naive-gib", type=float, default=8.0, help="skip Algorithm 1 where its estimated peak is larger")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--worker", nargs=4, metavar=("IMPL", "N", "K", "M"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        impl, n, k, m = a.worker[0], *map(int, a.worker[1:])
        print(json.dumps(measure(impl, n, k, m, a.repeats, "cpu"))); return

    import pandas as pd
    from sslmed.core import device_info, machine_tag
    info, tag = device_info(), machine_tag()
    rows = []
    for n, k, m in itertools.product(a.Ns, a.Ks, a.Ms):
        res = {}
        for impl in IMPLS:
            if impl == "algorithm1" and naive_estimate_gib(n, m) > a.max_naive_gib:
                res[impl] = {"error": f"skipped: est. {naive_estimate_gib(n, m):.0f} GiB > --max-naive-gib"}
            else: res[impl] = run_case(impl, n, k, m, a.repeats, a.device)
        ours, ref = res["sslmed"], res["algorithm1"]
        row = dict(machine=tag, device=info["gpu"] or info["cpu"], torch_threads=info["torch_threads"], N=n, K=k, M=m,
                   knots_paper=17, sslmed_ms=ours.get("time_ms"), algo1_ms=ref.get("time_ms"),
                   sslmed_peak_mib=ours.get("peak_mib"), algo1_peak_mib=ref.get("peak_mib"),
                   value_sslmed=ours.get("value"), value_algo1=ref.get("value"), note=ref.get("error") or ours.get("error") or "")
        if "value" in ours and "value" in ref:
            rel = abs(ours["value"] - ref["value"]) / max(abs(ref["value"]), 1e-12)
            if rel > 1e-3: raise SystemExit(f"values disagree at N={n} K={k} M={m}: {ours['value']} vs {ref['value']}")
            row.update(speedup=ref["time_ms"] / ours["time_ms"], memory_ratio=ref["peak_mib"] / max(ours["peak_mib"], 1e-3))
        rows.append(row)
        r = row
        print(f"N={n:>5} K={k:>4} M={m:>5}  sslmed {r['sslmed_ms'] or float('nan'):9.1f} ms {r['sslmed_peak_mib'] or float('nan'):8.1f} MiB"
              f"  | algorithm1 {r['algo1_ms'] or float('nan'):9.1f} ms {r['algo1_peak_mib'] or float('nan'):8.1f} MiB"
              f"  | {r.get('speedup', float('nan')):5.1f}x faster {r.get('memory_ratio', float('nan')):6.1f}x less memory {r['note']}",
              flush=True)
    df = pd.DataFrame(rows)
    out = Path(a.out) / f"sigreg_{tag}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".csv.tmp"); df.to_csv(tmp, index=False); os.replace(tmp, out)
    print(f"\n{info}\nwrote {out}")

if __name__ == "__main__":
    main()
