#!/usr/bin/env python
"""SIGReg forward+backward: sslmed against the official LeJEPA algorithm, paired, and a size grid against Algorithm 1.

The default run is the paired comparison on one case (N=2048, K=512, M=1024 slices, knots linspace(0, 3, 17)):
sslmed's `SIGReg` (its fast path, `method="powers"`, and its previous path, `method="direct"`) against the official
algorithm as the LeJEPA paper describes it (`official_sigreg` below: random unit slices, the empirical characteristic
function at every knot through `cos`/`sin` of an (N, M, knots) tensor with autograd, trapezoid weights, Gaussian
window). Same inputs, same slices, same grid, in one process; the order alternates every repetition and the ratio is
taken per repetition, at 1 and 2 threads. Peak memory comes from a fresh subprocess per implementation. Prints a
table and writes it with the CSV to `benchmarks/results/sigreg-vs-official_<machine>.{md,csv}`.

    python benchmarks/sigreg.py                        # the paired comparison (1 and 2 threads, 15 repetitions)
    python benchmarks/sigreg.py --threads 1 --reps 31  # more repetitions on a noisy machine
    python benchmarks/sigreg.py --grid                 # F7/T6 grid: N, K, M against Algorithm 1 -> sigreg_<machine>.csv
"""
import argparse, itertools, json, os, resource, statistics, subprocess, sys, time
from pathlib import Path
import torch

# ---------------------------------------------------------------- the official algorithm, from the paper's description
def official_epps_pulley(z, t_max=3.0, n_points=17):
    "Epps-Pulley statistic per column of `z` (N, M), times N: the ECF at every knot of an (N, M, knots) tensor, autograd."
    t = torch.linspace(0, t_max, n_points, device=z.device, dtype=z.dtype)
    dt = t_max / (n_points - 1)
    trap = torch.full_like(t, 2 * dt)
    trap[0] = trap[-1] = dt                               # trapezoid on [0, t_max], doubled for [-t_max, 0]
    gauss = torch.exp(-0.5 * t * t)                       # target characteristic function, also the window
    angles = z.unsqueeze(-1) * t                          # (N, M, knots)
    re, im = torch.cos(angles).mean(0), torch.sin(angles).mean(0)
    world = 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        import torch.distributed.nn.functional as dnn
        world = torch.distributed.get_world_size()
        re, im = dnn.all_reduce(re) / world, dnn.all_reduce(im) / world
    sq = (re - gauss).square() + im.square()
    return (sq @ (trap * gauss)) * z.shape[0] * world

def official_sigreg(x, step, num_slices=1024, t_max=3.0, n_points=17):
    "Sliced test: `num_slices` unit Gaussian directions from a generator seeded by `step`, mean statistic over slices."
    g = torch.Generator(device=x.device)
    g.manual_seed(int(step))
    dirs = torch.randn(x.shape[-1], num_slices, generator=g, device=x.device, dtype=x.dtype)
    dirs = dirs / dirs.norm(p=2, dim=0)
    return official_epps_pulley(x @ dirs, t_max, n_points).mean()

# ---------------------------------------------------------------- the paired comparison
CASE = dict(N=2048, K=512, M=1024, t_max=3.0, n_points=17)
CONTENDERS = ("sslmed", "sslmed-direct", "official")

def contender(name, m, t_max, n_points):
    "x -> scalar loss of one implementation; all draw the same slices (step 0)."
    from sslmed.sigreg import SIGReg, epps_pulley
    sig = SIGReg(num_slices=m, t_max=t_max, n_points=n_points)
    if name == "sslmed": return lambda x: sig(x, step=0)
    if name == "sslmed-direct":  # the previous path: cos and sin at every knot, same module otherwise
        return lambda x: epps_pulley(x @ sig.directions(x.shape[-1], 0, x.device, x.dtype), t_max, n_points, method="direct").mean()
    if name == "official": return lambda x: official_sigreg(x, 0, m, t_max, n_points)
    raise ValueError(f"unknown contender {name!r}; choose from {CONTENDERS}")

def embeddings(n, k, requires_grad=True):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, k, generator=g).requires_grad_(requires_grad)

def fwd_bwd_ms(fn, x) -> float:
    x.grad = None
    t0 = time.perf_counter()
    fn(x).backward()
    return (time.perf_counter() - t0) * 1e3

def paired_times(fns: dict, x, reps: int) -> dict:
    "Forward+backward ms per contender and repetition; the order is reversed every other repetition."
    for fn in fns.values(): fwd_bwd_ms(fn, x)  # warm-up
    names, times = list(fns), {n: [] for n in fns}
    for r in range(reps):
        for n in (names if r % 2 == 0 else names[::-1]): times[n].append(fwd_bwd_ms(fns[n], x))
    return times

def value_and_grad(fn, x):
    x.grad = None
    v = fn(x)
    v.backward()
    return v.item(), x.grad.clone()

def peak_mib(name, case) -> float:
    "Peak resident memory (MiB above the inputs) of one forward+backward, in a fresh process at 1 thread."
    cmd = [sys.executable, __file__, "--memory-worker", name, json.dumps(case)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode != 0: raise SystemExit(f"memory worker {name} failed: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]

def rss_bytes() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def reset_peak_rss() -> bool:
    "Reset the kernel's resident-set high-water mark of this process (Linux >= 4.0); False where that is not allowed."
    try:
        with open("/proc/self/clear_refs", "w") as f: f.write("5")
        return True
    except OSError: return False

def peak_rss_bytes() -> int:
    "High-water mark of the resident set since the last reset (VmHWM), or since the start where reset is not allowed."
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"): return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def memory_worker(name, case):
    torch.set_num_threads(1)
    fn, x = contender(name, case["M"], case["t_max"], case["n_points"]), embeddings(case["N"], case["K"])
    base = rss_bytes()
    if not reset_peak_rss(): raise SystemExit("cannot reset the peak resident set (/proc/self/clear_refs)")
    fn(x).backward()
    print(json.dumps({"peak_mib": max(peak_rss_bytes() - base, 0) / 2**20}))

def machine():
    from sslmed.core import device_info, machine_tag
    info = device_info()
    return dict(machine=machine_tag(), cpu=info["cpu"], cores=info["cores"], torch=torch.__version__,
                aten_capability=torch.backends.cpu.get_cpu_capability())

def paired(threads, reps, out_dir):
    import pandas as pd
    case, mach = dict(CASE), machine()
    fns = {n: contender(n, case["M"], case["t_max"], case["n_points"]) for n in CONTENDERS}
    x = embeddings(case["N"], case["K"])
    vals = {n: value_and_grad(fn, x) for n, fn in fns.items()}
    v_off, g_off = vals["official"]
    mem = {n: peak_mib(n, case) for n in CONTENDERS}
    rows = []
    for th in threads:
        torch.set_num_threads(th)
        times = paired_times(fns, x, reps)
        for n in CONTENDERS[:-1]:
            ratio = [o / s for o, s in zip(times["official"], times[n])]
            rows.append(dict(**mach, threads=th, **case, reps=reps, impl=n, ms_median=statistics.median(times[n]),
                             ms_min=min(times[n]), official_ms_median=statistics.median(times["official"]),
                             official_ms_min=min(times["official"]), ratio_median=statistics.median(ratio),
                             ratio_min=min(ratio), ratio_max=max(ratio), peak_mib=mem[n], official_peak_mib=mem["official"],
                             memory_ratio=mem["official"] / max(mem[n], 1e-3), value=vals[n][0], value_official=v_off,
                             value_rel_diff=abs(vals[n][0] - v_off) / abs(v_off),
                             grad_rel_diff=((vals[n][1] - g_off).abs().max() / g_off.abs().max()).item()))
    df = pd.DataFrame(rows)
    lines = [f"SIGReg forward+backward, N={case['N']} K={case['K']} M={case['M']}, knots linspace(0, {case['t_max']}, {case['n_points']}), "
             f"{reps} paired repetitions", f"{mach['cpu']}, {mach['cores']} cores, torch {mach['torch']}, ATen {mach['aten_capability']}", "",
             "| threads | implementation | ms (median) | official ms (median) | paired ratio, median (min–max) | peak MiB | official MiB "
             "| memory ratio | value rel. diff | grad rel. diff |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['threads']} | {r['impl']} | {r['ms_median']:.0f} | {r['official_ms_median']:.0f} | {r['ratio_median']:.2f} "
              f"({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) | {r['peak_mib']:.0f} | {r['official_peak_mib']:.0f} | {r['memory_ratio']:.1f} "
              f"| {r['value_rel_diff']:.1e} | {r['grad_rel_diff']:.1e} |" for r in rows]
    print("\n".join(lines))
    out = Path(out_dir) / f"sigreg-vs-official_{mach['machine']}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, write in ((out, lambda f: df.to_csv(f, index=False)), (out.with_suffix(".md"), lambda f: Path(f).write_text("\n".join(lines) + "\n"))):
        tmp = path.with_name(path.name + ".tmp"); write(tmp); os.replace(tmp, path)
    print(f"\nwrote {out} and {out.with_suffix('.md').name}")
    return df

# ---------------------------------------------------------------- the size grid against Algorithm 1 (F7, T6)
GRID_IMPLS = ("sslmed", "algorithm1")

def grid_fn(impl, n_slices):
    "The paper's 17 knots on [-5, 5] equal `SIGReg(t_max=5, n_points=9)`."
    from sslmed.sigreg import SIGReg, sigreg_reference
    if impl == "sslmed":
        mod = SIGReg(num_slices=n_slices, t_max=5.0, n_points=9)
        return lambda x: mod(x, step=0)
    return lambda x: sigreg_reference(x, step=0, num_slices=n_slices, t_max=5.0, n_points=17)

def grid_measure(impl, n, k, m, repeats, device):
    "Time (ms, median) and peak memory (MiB above the inputs) of one forward+backward; also the value."
    torch.manual_seed(0)
    x = torch.randn(n, k, device=device, requires_grad=True)
    fn = grid_fn(impl, m)
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

def grid_case(impl, n, k, m, repeats, device):
    if device == "cpu":  # a fresh process per case, so the resident-memory peak belongs to this case alone
        cmd = [sys.executable, __file__, "--grid-worker", impl, str(n), str(k), str(m), "--repeats", str(repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0: return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:120]}
        return json.loads(out.stdout.strip().splitlines()[-1])
    try: return grid_measure(impl, n, k, m, repeats, device)
    except torch.OutOfMemoryError: torch.cuda.empty_cache(); return {"error": "out of memory"}

def grid(a):
    import pandas as pd
    from sslmed.core import device_info, machine_tag
    info, tag = device_info(), machine_tag()
    rows = []
    for n, k, m in itertools.product(a.Ns, a.Ks, a.Ms):
        res = {}
        for impl in GRID_IMPLS:
            if impl == "algorithm1" and naive_estimate_gib(n, m) > a.max_naive_gib:
                res[impl] = {"error": f"skipped: est. {naive_estimate_gib(n, m):.0f} GiB > --max-naive-gib"}
            else: res[impl] = grid_case(impl, n, k, m, a.repeats, a.device)
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

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="paired comparison: torch threads")
    ap.add_argument("--reps", type=int, default=15, help="paired comparison: repetitions (>= 11)")
    ap.add_argument("--grid", action="store_true", help="run the size grid against Algorithm 1 instead")
    ap.add_argument("--Ns", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--Ks", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--Ms", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--repeats", type=int, default=3, help="grid: repetitions per case")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-naive-gib", type=float, default=8.0, help="grid: skip Algorithm 1 where its estimated peak is larger")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--grid-worker", nargs=4, metavar=("IMPL", "N", "K", "M"), help=argparse.SUPPRESS)
    ap.add_argument("--memory-worker", nargs=2, metavar=("IMPL", "CASE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_worker: return memory_worker(a.memory_worker[0], json.loads(a.memory_worker[1]))
    if a.grid_worker:
        impl, n, k, m = a.grid_worker[0], *map(int, a.grid_worker[1:])
        print(json.dumps(grid_measure(impl, n, k, m, a.repeats, "cpu"))); return
    if a.grid: return grid(a)
    if a.reps < 11: raise SystemExit(f"--reps must be >= 11 for a paired median, got {a.reps}")
    paired(a.threads, a.reps, a.out)

if __name__ == "__main__":
    main()
