#!/usr/bin/env python
"""Where a finished `sslmed paper --profile demo` run spent its wall time: measured, not estimated.

Reads the run store of a clean clone that regenerated the demo (`<clone>/runs/train/demo`) and the log `sslmed paper`
printed. Per trained run: its wall seconds from its files (`config.yaml` written when it starts, `backbone.pt` when it
ends; a run resumed after an interruption counts its whole span). The training phase ends when the last run's
`backbone.pt` is written (every run trains first); the notebooks' phase is the rest. Per notebook: the wall time
`sslmed paper` reports (side by side with `--jobs` > 1, so they overlap), and its slowest cells from the executed copy
papermill wrote (`<clone>/runs/demo/<notebook>.ipynb`, each cell's `duration`). Writes `benchmarks/results/demo_wall_<machine>.csv` (one row per run) and `.md` (per domain and method, per notebook).

    python benchmarks/demo_wall.py /tmp/demo --log /tmp/demo/paper.log --start 1796600000 --end 1796603600
"""
import argparse, re
from pathlib import Path
import pandas as pd, yaml

def run_rows(store: Path) -> pd.DataFrame:
    "One row per finished run under `store`: domain, method, seed, steps, overrides' folder, wall seconds."
    rows = []
    for cfg in sorted(store.glob("*/*/config.yaml")):
        done = cfg.parent / "backbone.pt"
        if not done.is_file(): continue
        c = yaml.safe_load(cfg.read_text())
        rows.append(dict(domain=c["domain"], method=c["method"], seed=c["seed"], steps=c["steps"], run=cfg.parent.name,
                         wall_s=round(done.stat().st_mtime - cfg.stat().st_ctime, 1)))
    return pd.DataFrame(rows)

def notebook_rows(log: Path) -> pd.DataFrame:
    "The per-notebook lines of `sslmed paper`'s summary: notebook, status, wall seconds."
    pat = re.compile(r"^(\w+)\s+(ok|failed|cached)\s+([\d.]+)\s")
    rows = [dict(notebook=m[1], status=m[2], wall_s=float(m[3])) for line in log.read_text(errors="replace").splitlines()
            if (m := pat.match(line))]
    return pd.DataFrame(rows)

def slow_cells(clone: Path, top: int = 3) -> pd.DataFrame:
    "Each executed notebook's `top` slowest code cells: notebook, seconds, the cell's first line."
    import json
    rows = []
    for nb in sorted((clone / "runs" / "demo").glob("*.ipynb")):
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        for c in cells:
            first = next((l.strip() for l in "".join(c["source"]).splitlines() if l.strip() and not l.startswith("#")), "")
            rows.append(dict(notebook=nb.stem, cell_s=round((c.get("metadata", {}).get("papermill") or {}).get("duration") or 0, 1),
                             cell=first[:70].replace("|", "/")))
    df = pd.DataFrame(rows)
    return df.sort_values("cell_s", ascending=False).groupby("notebook", sort=False).head(top).sort_values(["notebook", "cell_s"], ascending=[True, False])

def main():
    from sslmed.core import machine_tag
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clone", type=Path, help="the clean clone that ran `sslmed paper --profile demo`")
    ap.add_argument("--log", type=Path, required=True, help="what `sslmed paper` printed")
    ap.add_argument("--start", type=float, required=True, help="epoch seconds when `sslmed paper` started")
    ap.add_argument("--end", type=float, required=True, help="epoch seconds when it ended")
    ap.add_argument("--procs", type=int, default=2, help="runs trained side by side (--procs)")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks run side by side (--jobs)")
    a = ap.parse_args()
    runs, nbs = run_rows(a.clone / "runs" / "train" / "demo"), notebook_rows(a.log)
    out = Path(__file__).parent / "results"; out.mkdir(exist_ok=True)
    name = f"demo_wall_{machine_tag()}"
    runs.to_csv(out / f"{name}.csv", index=False)
    by = runs.groupby(["domain", "method"]).agg(runs=("run", "size"), wall_s=("wall_s", "sum")).reset_index()
    by = pd.concat([by, pd.DataFrame([dict(domain="total", method="", runs=len(runs), wall_s=runs.wall_s.sum())])])
    total = a.end - a.start
    store = a.clone / "runs" / "train" / "demo"
    train_end = max(p.stat().st_mtime for p in store.glob("*/*/backbone.pt"))
    train_s, nb_s = train_end - a.start, a.end - train_end
    lines = [f"# Demo wall time on {machine_tag()} (measured)", "",
             f"`sslmed paper --profile demo --procs {a.procs} --jobs {a.jobs}` in a clean clone: **{total:.0f} s ({total / 60:.1f} min)** from start to end,",
             f"{len(runs)} runs trained. Run seconds are each run's own span (two run side by side, so they sum to about",
             f"{a.procs}× the training part of the wall time). Written by `benchmarks/demo_wall.py`.", "",
             "## Per phase and notebook (wall seconds)", "",
             f"Training every run first (`sslmed.paper.pretrain_plan`, longest first, {a.procs} processes): **{train_s:.0f} s** "
             "(from the start to the last run's `backbone.pt`; it also holds the phantom renders and the plan). Then the "
             f"notebooks, {a.jobs} at a time, each finding its runs finished: **{nb_s:.0f} s**. Each notebook's own wall time:", "",
             nbs.to_markdown(index=False), "", f"Sum of notebook times: {nbs.wall_s.sum():.0f} s.", "",
             "Their slowest cells (papermill's `duration`):", "", slow_cells(a.clone).to_markdown(index=False), "",
             "## Training, per domain and method (sum of run spans)", "", by.round(1).to_markdown(index=False), ""]
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))

if __name__ == "__main__": main()
