#!/usr/bin/env python
"""Where the demo profile's time goes: an estimate of seconds per trained run and per experiment notebook on this machine.

For every distinct step cost of the demo plan (`sslmed paper --profile demo --plan`; runs whose model, method and views
are the same share one timing) it builds the run with the trainer's own pieces (`setup_run`, `next_batch`, `make_views`,
`forward_loss`, `backward_micro`) and times one warm-up step (not counted) then `--steps` steps, split into
data (next batch), views, forward and backward + optimiser step. Per domain it times the evaluation of one run:
feature extraction of the demo evaluation sets (`Domain.sizes('demo')`, measured on `--eval-items` items and scaled)
and the linear + kNN probes of every label (on features tiled to the full size). Multiplying by the plan's steps,
runs and evaluation jobs gives seconds per run and per notebook (a run shared by notebooks is charged to the first
one that trains it). Writes `benchmarks/results/demo_budget_<machine>.csv` and `.md`.

    python benchmarks/demo_budget.py                 # 1 warm-up + 2 timed steps per recipe
"""
import argparse, dataclasses, json, os, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd, torch

def time_steps(cfg, n_steps: int) -> dict:
    "Seconds per step of `cfg` split into data, views, forward and backward+step (the first step untimed)."
    from sslmed.train import setup_run, next_batch, make_views, forward_loss, backward_micro, build_dataset
    t0 = time.perf_counter(); ds = build_dataset(cfg); t_data = time.perf_counter() - t0
    r = setup_run(cfg, ds)
    try:
        if not r.method.trainable: return dict(data_build_s=t_data, data_s=0, views_s=0, forward_s=0, backward_s=0)
        acc = dict(data_s=0.0, views_s=0.0, forward_s=0.0, backward_s=0.0)
        for step in range(n_steps + 1):
            t = [time.perf_counter()]
            x, y = next_batch(r); t.append(time.perf_counter())
            make_views(r.views, x, cfg.seed, step, 0, cfg.view_chunk, r.meta); t.append(time.perf_counter())
            terms = forward_loss(r, x, y, step); t.append(time.perf_counter())   # views again inside: subtracted below
            r.opt.zero_grad(set_to_none=True); backward_micro(terms["loss"], 1)
            torch.nn.utils.clip_grad_norm_(r.method.parameters(), cfg.grad_clip or float("inf"))
            r.opt.step(); r.sched.step(); r.method.after_step(step + 1, cfg.steps); t.append(time.perf_counter())
            if step == 0: continue
            d = np.diff(t)
            acc["data_s"] += d[0]; acc["views_s"] += d[1]; acc["forward_s"] += max(d[2] - d[1], 0.0); acc["backward_s"] += d[3]
        return dict(data_build_s=t_data, **{k: v / n_steps for k, v in acc.items()})
    finally: r.close()

def time_eval(cfg, n_items: int) -> dict:
    "Seconds to embed the demo evaluation sets of `cfg`'s domain (scaled from `n_items`) and to fit its probes once."
    from sslmed.domain import get_domain
    from sslmed.features import extract_features, Preprocessed
    from sslmed.protocols import eval_datasets, eval_tasks
    from sslmed.probes import linear_probe, knn_eval
    from sslmed.train import build_method
    dom = get_domain(cfg.domain)
    method, _ = build_method(cfg, dom)
    model = Preprocessed(method.backbone(), dom.eval_tf(**cfg.views_kw)).eval()
    t0 = time.perf_counter(); train, test = eval_datasets(cfg.domain, "demo", 0); t_make = time.perf_counter() - t0
    sub = torch.utils.data.Subset(train, range(min(n_items, len(train))))
    extract_features(model, torch.utils.data.Subset(train, range(8)), batch_size=64, progress=False)  # warm-up
    t0 = time.perf_counter(); f = extract_features(model, sub, batch_size=64, progress=False); t_ex = time.perf_counter() - t0
    per_item = t_ex / len(sub)
    x = torch.stack([torch.as_tensor(sub[i][0]) for i in range(len(sub))])
    t0 = time.perf_counter(); dom.eval_tf(**cfg.views_kw)(x); tf_item = (time.perf_counter() - t0) / len(sub)  # the deterministic eval transform alone
    tile = lambda n: f.subset(np.resize(np.arange(len(f)), n))
    n_tr, n_te = len(train), len(test)
    ftr, fte = tile(n_tr), tile(n_te)
    lin = knn = 0.0
    for key, task in eval_tasks(cfg.domain, "demo").items():
        t0 = time.perf_counter(); linear_probe(ftr, key, task, val=0.2, test=fte, seed=0, device=torch.device("cpu")); lin += time.perf_counter() - t0
        t0 = time.perf_counter()
        knn_eval(ftr, key, fte, key, k=20, task="multiclass" if task == "ordinal" else task, device=torch.device("cpu"))
        knn += time.perf_counter() - t0
    return dict(eval_sets_load_s=t_make, extract_item_s=per_item, extract_s=per_item * (n_tr + n_te), eval_tf_item_s=tf_item, linear_s=lin, knn_s=knn,
                eval_items=n_tr + n_te, labels=len(eval_tasks(cfg.domain, "demo")))

FT_EPOCHS_DEFAULT = 3

def finetune_s(step_cost: dict, ev: dict, batch: int, fraction: float, epochs: int) -> float:
    "A fine-tuning job's seconds: `epochs` over 80% of the labelled fraction at the supervised step's cost per sample, 20% validated, the test set predicted."
    per_sample = (step_cost["forward_s"] + step_cost["backward_s"]) / batch
    n = fraction * ev["eval_items"] * 2 / 3                     # the train split: 2/3 of the evaluation items
    return epochs * (0.8 * n * per_sample + 0.2 * n * ev["extract_item_s"]) + ev["eval_items"] / 3 * ev["extract_item_s"]

def notebook_estimate(runs: pd.DataFrame, ev: pd.DataFrame, params: dict, calls: list, evals: list, order: list) -> pd.DataFrame:
    "Seconds per notebook: training charged to the first notebook (paper order) that trains a run; features once per run (the disk cache); probes per job."
    ev = ev.set_index("domain")
    runs = runs.assign(first=[min(n.split(","), key=order.index) for n in runs.notebooks])
    key = lambda c: (c["domain"], c["method"], c["seed"], json.dumps(c["overrides"], sort_keys=True))
    by_key = {(r.domain, r.method, r.seed, r.overrides): r for r in runs.itertuples()}
    extracted, rows = set(), {n: dict(notebook=n, runs_trained=0, train_s=0.0, extract_s=0.0, probe_s=0.0, finetune_s=0.0) for n in order}
    for r in runs.itertuples(): rows[r.first]["runs_trained"] += int(r.step_s > 0); rows[r.first]["train_s"] += r.train_s
    def extract(nb, k, dom, ck="backbone.pt"):
        if (k, ck) not in extracted: extracted.add((k, ck)); rows[nb]["extract_s"] += ev.loc[dom, "extract_s"]
    for nb in order:
        cs = [c for c in calls if c["notebook"] == nb]
        p = params.get(nb, {})
        for c in cs:
            k, dom = key(c), c["domain"]
            if nb == "main_results": extract(nb, k, dom); rows[nb]["probe_s"] += ev.loc[dom, "linear_s"] + ev.loc[dom, "knn_s"]
            elif nb in ("lambda_sweep", "sigreg_design", "selective_prediction", "views_and_phantoms"):
                extract(nb, k, dom); rows[nb]["probe_s"] += ev.loc[dom, "linear_s"]
            elif nb == "embeddings": extract(nb, k, dom)
        if nb == "label_efficiency":
            fr, eps = p.get("fractions", [1.0]), p.get("finetune_epochs", FT_EPOCHS_DEFAULT)
            ft_doms = p.get("finetune_domains") or []
            seen = set()
            for c in cs:
                k = key(c)
                if k in seen: continue
                seen.add(k); extract(nb, k, c["domain"]); rows[nb]["probe_s"] += len(fr) * ev.loc[c["domain"], "linear_s"]
                if c["domain"] in ft_doms:
                    r = by_key[k]; sup = runs[(runs.domain == c["domain"]) & (runs.method == "supervised")].iloc[0]
                    sc = dict(forward_s=sup.step_forward_s, backward_s=sup.step_backward_s)
                    rows[nb]["finetune_s"] += ev.loc[c["domain"], "labels"] * sum(finetune_s(sc, ev.loc[c["domain"]], sup.batch, f, eps) for f in fr)
        known = ("main_results", "lambda_sweep", "sigreg_design", "selective_prediction", "views_and_phantoms", "embeddings",
                 "label_efficiency", "training_dynamics")
        if nb not in known:   # by the plan's job kinds: a grid cell or driver embeds its run, a checkpoint job embeds a snapshot
            doms = sorted({c["domain"] for c in cs})
            for e in (e for e in evals if e["notebook"] == nb):
                if e["kind"] == "probe (checkpoint)":
                    for dom in doms:
                        rows[nb]["extract_s"] += e["jobs"] / len(doms) * ev.loc[dom, "extract_s"]; rows[nb]["probe_s"] += e["jobs"] / len(doms) * ev.loc[dom, "linear_s"]
                else:
                    for c in cs:
                        extract(nb, key(c), c["domain"])
                        if e["kind"].startswith("probe"): rows[nb]["probe_s"] += ev.loc[c["domain"], "linear_s"]
        if nb == "training_dynamics":
            n_ck = next((e["jobs"] for e in evals if e["notebook"] == nb), 0)
            per_dom = n_ck / max(1, len({c["domain"] for c in cs}))
            for dom in {c["domain"] for c in cs}:
                rows[nb]["extract_s"] += per_dom * ev.loc[dom, "extract_s"]; rows[nb]["probe_s"] += per_dom * ev.loc[dom, "linear_s"]
    t = pd.DataFrame(rows.values())
    t["total_s"] = t.train_s + t.extract_s + t.probe_s + t.finetune_s
    return pd.concat([t, pd.DataFrame([dict(notebook="total", **t.drop(columns="notebook").sum())])], ignore_index=True)

def redundancies(runs: pd.DataFrame, ev: pd.DataFrame, params: dict, calls: list) -> pd.DataFrame:
    "Evaluation work the demo repeats: probe fits identical to one another notebook already made, with their seconds."
    ev = ev.set_index("domain")
    main = {(c["domain"], c["method"], c["seed"]) for c in calls if c["notebook"] == "main_results" and not c["overrides"]}
    le = {(c["domain"], c["method"], c["seed"]) for c in calls if c["notebook"] == "label_efficiency" and not c["overrides"]}
    lam = [c for c in calls if c["notebook"] == "lambda_sweep" and c["overrides"].get("method_kw.lamb") == runs_default_lamb(runs, c)]
    sd = [c for c in calls if c["notebook"] == "sigreg_design"]
    sd_same = [c for c in sd if is_default_run(runs, c)]
    dyn = {c["domain"] for c in calls if c["notebook"] == "training_dynamics" and c["method"] == "lejepa"}
    cam = [c for c in calls if c["notebook"] == "views_and_phantoms"]
    lin = lambda d: ev.loc[d, "linear_s"]
    rows = [dict(what="label_efficiency: the 100%-label linear probe of every run main_results also probes (same run, seed, probe, split)",
                 fits=len(le & main), seconds=sum(lin(d) for d, _, _ in le & main)),
            dict(what="lambda_sweep: the λ of the recipe is the main_results LeJEPA run, refit", fits=len(lam), seconds=sum(lin(c["domain"]) for c in lam)),
            dict(what="sigreg_design: cells whose overrides equal the recipe (256 slices, t_max 3, 17 knots, SIGReg on the projector, 2+2 views) "
                      "are one run evaluated again per cell", fits=len(sd_same), seconds=sum(lin(c["domain"]) for c in sd_same)),
            dict(what="training_dynamics: the last snapshot is backbone.pt (no SWA): its features hit the cache, its linear probe is refit",
                 fits=len(dyn), seconds=sum(lin(d) for d in dyn)),
            dict(what="views_and_phantoms: probe_classifier refits a linear probe main_results already fitted (CAM runs)",
                 fits=len(cam), seconds=sum(lin(c["domain"]) for c in cam))]
    n_ck = {c.domain: c.steps // c.keep_every + 1 for c in runs_cfgs(runs) if c.method == "lejepa" and c.keep_every}
    for d in ev.index:   # the evaluation transform is deterministic: the same evaluation set is transformed again at every extraction
        n = int((runs.domain == d).sum()) + n_ck.get(d, 0)
        rows.append(dict(what=f"{d}: the evaluation transform (Domain.eval_tf) of the same evaluation set, recomputed at each of {n} extractions "
                              f"({ev.loc[d, 'eval_tf_item_s'] / ev.loc[d, 'extract_item_s']:.0%} of an extraction)",
                         fits=n - 1, seconds=(n - 1) * ev.loc[d, "eval_tf_item_s"] * ev.loc[d, "eval_items"]))
    return pd.DataFrame(rows).query("seconds >= 1")

def runs_cfgs(runs):
    "The recipe config of each distinct run (the lejepa recipe's snapshot cadence)."
    from sslmed.config import recipe
    return [recipe(r.domain, r.method, "demo") for r in runs.drop_duplicates(["domain", "method"]).itertuples()]

def runs_default_lamb(runs, c) -> float:
    "The λ of the domain's LeJEPA recipe."
    r = runs[(runs.domain == c["domain"]) & (runs.method == "lejepa") & (runs.overrides == "{}")]
    return r.iloc[0].lamb if len(r) else None

def is_default_run(runs, c) -> bool:
    "Whether a call lands in the run folder of the recipe as it is (the plan puts it there)."
    r = runs[(runs.domain == c["domain"]) & (runs.method == c["method"]) & (runs.seed == c["seed"]) & (runs.overrides == "{}")]
    return len(r) > 0 and c["run"] == r.iloc[0].run

def write_md(path: Path, tag: str, info: dict, load: tuple, steps: int, runs: pd.DataFrame, ev: pd.DataFrame, nb: pd.DataFrame,
             red: pd.DataFrame, lc_ck: int = 0):
    f = lambda df, fmt=".1f": df.to_markdown(index=False, floatfmt=fmt)
    trained = runs[runs.step_s > 0]
    per_recipe = (trained.groupby(["domain", "method", "encoder", "batch", "steps"])
                  .agg(runs_all_overrides=("seed", "size"), data_s=("step_data_s", "first"), views_s=("step_views_s", "first"),
                       forward_s=("step_forward_s", "first"), backward_s=("step_backward_s", "first"), step_s=("step_s", "first"),
                       run_s=("train_s", "first"), all_runs_s=("train_s", "sum")).reset_index().sort_values("all_runs_s", ascending=False))
    costs = [(f"training {r.domain}/{r.method} ({r.runs_all_overrides} runs × {r.steps} steps)", r.all_runs_s) for r in per_recipe.itertuples()]
    costs += [(f"{n.notebook}: feature extraction", n.extract_s) for n in nb.itertuples() if n.notebook != "total"]
    costs += [(f"{n.notebook}: probes", n.probe_s) for n in nb.itertuples() if n.notebook != "total"]
    costs += [(f"{n.notebook}: fine-tuning", n.finetune_s) for n in nb.itertuples() if n.notebook != "total"]
    top = pd.DataFrame(sorted(costs, key=lambda x: -x[1])[:5], columns=["cost", "seconds"])
    total = nb.total_s.iloc[-1]
    fu = trained[trained.domain == "fundus"]
    views_total = float((fu.step_views_s * fu.steps).sum()); views_share = views_total / max(float(fu.train_s.sum()), 1e-9)
    text = f"""# Demo budget on {tag}

Where `sslmed paper --profile demo` spends its time, estimated by `benchmarks/demo_budget.py` on {info['cpu']}, {info['cores']} cores,
torch threads {info['torch_threads']} (the script ran with OMP_NUM_THREADS=1: **one core's seconds**), load average during the run
{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (the machine is shared: absolute seconds are inflated by the other processes, shares are the
useful part; absolute times belong on an idle machine).

Method: every distinct step cost of the demo plan (`sslmed.executors.distinct_runs`; runs with the same model, method and views share a
timing) is built with the trainer's own `setup_run` and timed for **{steps} step(s) after one untimed warm-up step** — a few steps, so each
number carries the noise of a shared machine. A step is split into data (`next_batch`), views (`make_views`), forward
(`forward_loss` minus its views) and backward + clipping + optimiser step. Evaluation per domain: `extract_features` on the first
128 items of the demo evaluation train set (after a warm-up batch), scaled to the train + test sets, and one linear probe + one kNN per
label on features tiled to the full size. Notebook seconds = training (charged to the first notebook in `list_experiments` order (alphabetical) that trains a run:
runs are shared through the run store) + feature extraction (once per run and checkpoint: the feature cache) + probe fits per
evaluation job + fine-tuning (label_efficiency on ECG: modelled from the supervised step's cost per sample, 3 epochs, not timed). Not
counted: t-SNE/PCA maps, CAM rendering, figures, kernel start-up, checkpoint writes, the one-off phantom renders (disk cache).

## Seconds per notebook (one core)

{f(nb)}

Total {total:.0f} core-seconds = {total / 3600:.2f} core-hours; on 2 cores at perfect scaling {total / 2 / 60:.0f} min. For
comparison, the full demo regeneration under ATEN_CPU_CAPABILITY=avx2 with `--procs 2` took 3,561 s wall
(`demo_compare_avx2_vs_native-amd-epyc-2c.txt`), i.e. {3561 * 2:.0f} core-seconds: this estimate is {total / 7122:.2f}× that. That
run predates the collapse and learning_curves notebooks, the conv-stem angio recipe and the larger evaluation sets, so the ratio
mixes load-average inflation (step seconds moved up to 2-3× between processes in `demo_speed`) with real growth of the demo.

## Top 5 costs

{f(top)}

## Per recipe: seconds per step (one core) and per run

Rows group a (domain, method) over seeds and overrides; the step columns are of its recipe as it is, `all_runs_s` sums every run
(overridden ones at their own step cost).

{f(per_recipe, ".3f")}

## Evaluation per domain (one core)

{f(ev, ".3f")}

## Redundant evaluation work (estimated seconds, one core)

{f(red)}

Fundus training views: `views_s` is {views_share:.0%} of every fundus step ({views_total:.0f} s over the demo's fundus runs): the
CLAHE + background-removal preprocessing runs on every view of every step; if it is applied before the random crop, computing it once
per training image would save most of that (not verified here).

learning_curves (read from its plan, not measured separately): its {lc_ck} checkpoint probes include the seed-0 LeJEPA snapshots
that training_dynamics already embeds and probes (features then come from the cache; the estimate above charges them again, an
overestimate of at most 16 extractions) and, where a curve's last point is the final step, backbones main_results already probed.

Features themselves are not extracted twice: `embed` caches them on disk per checkpoint hash, code digest and evaluation spec, and
`run_cells` trains each distinct run once before its cells. Phantoms are rendered once into the disk cache (`Rendered`); a later
`eval_datasets` call costs ~0.02 s.
"""
    tmp = path.with_suffix(".tmp"); tmp.write_text(text); os.replace(tmp, path)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per recipe (after one warm-up step)")
    ap.add_argument("--eval-items", type=int, default=128, help="evaluation items embedded per domain (scaled to the sets' sizes)")
    ap.add_argument("--reuse-steps", action="store_true", help="keep the step timings of the CSV; time evaluation again")
    ap.add_argument("--report-only", action="store_true", help="write the MD from the CSVs")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    from sslmed.core import device_info, machine_tag, project_root
    from sslmed.executors import distinct_runs, planned_calls, flop_key
    from sslmed.paper import experiment_params, list_experiments
    from sslmed.protocols import run_path
    info, tag, root = device_info(), machine_tag(), project_root()
    load = os.getloadavg()
    params = experiment_params("demo", root)
    runs = distinct_runs("demo", params, root)
    calls, evals = planned_calls("demo", params, root)
    for c in calls: c["run"] = str(run_path(c["domain"], c["method"], "demo", c["seed"], c["overrides"], root)[1].relative_to(root))
    runs["key"] = [flop_key(c) for c in runs.cfg]
    runs["lamb"] = [c.method_kw.get("lamb") for c in runs.cfg]
    out, out_ev = Path(a.out) / f"demo_budget_{tag}.csv", Path(a.out) / f"demo_budget_eval_{tag}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    step_cost = {}
    if a.reuse_steps or a.report_only:   # a run of the earlier CSV keeps its timing, under the step-cost key of today's plan
        old = pd.read_csv(out, dtype={"overrides": str}).set_index(["domain", "method", "seed", "overrides", "encoder", "batch", "steps"])
        for r in runs.itertuples():   # a changed recipe (encoder, batch, steps) is timed again; views changes are not seen: time afresh then
            at = (r.domain, r.method, r.seed, r.overrides, r.cfg.encoder, r.cfg.batch_size, r.cfg.steps)
            if at in old.index:
                o = old.loc[at]
                o = o.iloc[0] if isinstance(o, pd.DataFrame) else o
                step_cost.setdefault(r.key, {c[5:]: float(o[c]) for c in ("step_data_s", "step_views_s", "step_forward_s", "step_backward_s")})
    eval_cost = pd.read_csv(out_ev).set_index("domain").T.to_dict() if a.report_only else {}
    with tempfile.TemporaryDirectory() as d:
        for i, c in enumerate(runs.cfg):
            k = runs.key[i]
            if k not in step_cost:
                cc = dataclasses.replace(c, out_dir=str(Path(d) / k), progress=False, data={**c.data, "n": 4 * c.batch_size})  # a few batches
                step_cost[k] = {n: v for n, v in time_steps(cc, a.steps).items() if n != "data_build_s"}
                print(f"{c.domain:>7} {c.method:<12} {c.encoder:<22} " + " ".join(f"{n}={v:.3f}" for n, v in step_cost[k].items()), flush=True)
            if c.domain not in eval_cost:
                eval_cost[c.domain] = time_eval(c, a.eval_items)
                print(f"{c.domain:>7} evaluation " + " ".join(f"{n}={v:.3f}" for n, v in eval_cost[c.domain].items()), flush=True)
    rows = []
    for i, r in runs.iterrows():
        c, s = r.cfg, step_cost[r.key]
        per_step = sum(s.values())
        rows.append(dict(machine=tag, domain=r.domain, method=r.method, seed=r.seed, overrides=r.overrides, encoder=c.encoder,
                         batch=c.batch_size, steps=c.steps, notebooks=r.notebooks, **{f"step_{k}": v for k, v in s.items()},
                         step_s=per_step, train_s=per_step * c.steps))
    df = pd.DataFrame(rows)
    if not a.report_only:
        tmp = out.with_suffix(".tmp"); df.to_csv(tmp, index=False); os.replace(tmp, out)
    ev = pd.DataFrame(eval_cost).T.rename_axis("domain").reset_index().assign(machine=tag)
    if not a.report_only:
        tmp = out_ev.with_suffix(".tmp"); ev.to_csv(tmp, index=False); os.replace(tmp, out_ev)
    order = list_experiments(root)
    full = df.assign(lamb=list(runs.lamb), run=list(runs.run))
    nb = notebook_estimate(full, ev, params, calls, evals, order)
    red = redundancies(full, ev, params, calls)
    print(nb.to_string(index=False, float_format=lambda x: f"{x:.1f}")); print(red.to_string(index=False))
    lc_ck = sum(e["jobs"] for e in evals if e["notebook"] == "learning_curves" and e["kind"] == "probe (checkpoint)")
    write_md(out.with_suffix(".md"), tag, info, load, a.steps, full, ev.drop(columns="machine"), nb, red, lc_ck)
    print(f"\n{info}\nwrote {out}, {out_ev}, {out.with_suffix('.md')}")

if __name__ == "__main__":
    main()
