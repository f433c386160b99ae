"""Portability check: the tests that assert on trained or statistical quantities, under every CPU kernel level and thread count.

PyTorch dispatches different floating-point kernels by CPU (`ATEN_CPU_CAPABILITY=default|avx2|avx512`), and the thread
count changes reduction order: a training run lands on a slightly different model on each. Every such assertion goes
through `sslmed.core.assert_margin`, which records value, bound and margin in `$SSLMED_MARGINS`; this script runs those
notebooks (and `slow` cells) and pytest files once per (level, threads) and prints the spread and the smallest margin.

    python tests/portable.py                 # default, avx2, native x 1, 2 threads (about 20 min on 2 cores)
    python tests/portable.py --caps avx2 --threads 1 --jobs 2
Writes `benchmarks/results/portable-<machine>.csv` and exits non-zero if any run failed.
"""
from __future__ import annotations
import argparse, itertools, json, os, re, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def margin_sources() -> tuple[list[Path], list[Path]]:
    "The notebooks and pytest files that call `assert_margin` (the statistical assertions)."
    nbs = sorted(p for p in (ROOT / "nbs").rglob("*.ipynb") if "experiments" not in p.parts
                 and "assert_margin(" in p.read_text() and "def assert_margin" not in p.read_text())
    tests = sorted(p for p in (ROOT / "tests").glob("test_*.py") if "assert_margin(" in p.read_text())
    return nbs, tests


def run_combo(cap: str, threads: int, nbs: list[Path], tests: list[Path], log_dir: Path) -> dict:
    "Run the notebooks (slow cells included) and the tests under one kernel level and thread count."
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "SSLMED_MARGINS": str(log_dir / f"{cap}-{threads}.jsonl"), "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if cap != "native": env["ATEN_CPU_CAPABILITY"] = cap
    t0, ok, out = time.time(), True, ""
    for nb in nbs:
        r = subprocess.run([str(BIN / "nbdev-test"), "--flags", "slow", "--n-workers", "1", "--cell-timeout", "3600", str(nb)], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        ok &= r.returncode == 0; out += r.stdout[-2000:] + r.stderr[-2000:]
    if tests:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "", *map(str, tests)], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        ok &= r.returncode == 0; out += r.stdout[-2000:] + r.stderr[-2000:]
    return dict(cap=cap, threads=threads, ok=ok, seconds=time.time() - t0, out=out)


def native_level() -> str:
    import torch
    return torch.backends.cpu.get_cpu_capability().lower()


def table(log_dir: Path, native: str):
    "One row per assertion: its bound, the value under each combination, the spread and the smallest margin."
    import pandas as pd
    # a run is named by its file (level-threads): notebooks that pin one thread record 1 thread under both
    recs = [{**json.loads(l), "run": f.stem.replace("native", native).replace("-", "/") + "t"}
            for f in sorted(log_dir.glob("*.jsonl")) for l in f.read_text().splitlines() if l.strip()]
    if not recs: return pd.DataFrame()
    df = pd.DataFrame(recs)
    wide = df.pivot_table(index=["name", "bound"], columns="run", values="value", aggfunc="first")
    g = df.groupby(["name", "bound"])
    wide["spread"] = g.value.max() - g.value.min()
    wide["min_margin"] = g.margin.min()
    wide["margin/spread"] = wide.min_margin / wide.spread.where(wide.spread > 0)
    return wide.reset_index()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--caps", default="default,avx2,native", help="kernel levels (ATEN_CPU_CAPABILITY), comma-separated")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("--jobs", type=int, default=1, help="combinations run at once (1-thread runs only share cores well)")
    ap.add_argument("--only", default=None, help="run only the notebooks and tests whose file name contains this text")
    ap.add_argument("--out", default=None, help="CSV path (default benchmarks/results/portable-<machine>.csv)")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from sslmed.core import machine_tag
    nbs, tests = margin_sources()
    if a.only: nbs, tests = [p for p in nbs if a.only in p.name], [p for p in tests if a.only in p.name]
    print("notebooks:", ", ".join(p.name for p in nbs), "| tests:", ", ".join(p.name for p in tests) or "-")
    combos = list(itertools.product(a.caps.split(","), map(int, a.threads.split(","))))
    log_dir = Path(tempfile.mkdtemp(prefix="sslmed-portable-"))
    with ThreadPoolExecutor(a.jobs) as ex:
        results = list(ex.map(lambda c: run_combo(*c, nbs, tests, log_dir), combos))
    for r in results:
        print(f"{r['cap']:>8s} {r['threads']}t  {'ok ' if r['ok'] else 'FAILED'} {r['seconds']:6.0f}s")
        if not r["ok"]: print(r["out"])
    native = native_level()
    t = table(log_dir, native)
    import pandas as pd
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
        print(t.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    out = Path(a.out) if a.out else ROOT / "benchmarks/results" / f"portable-{re.sub(r'[^A-Za-z0-9_.-]', '_', machine_tag())}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    t.assign(machine=machine_tag(), native=native).to_csv(out, index=False)
    print("wrote", out.relative_to(ROOT) if out.is_relative_to(ROOT) else out)
    bad = [r for r in results if not r["ok"]] or (t.min_margin <= 0).any()
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
