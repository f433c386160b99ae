#!/usr/bin/env python
"""Feature extraction on a CPU against the forward's batch size, per domain, side by side in one process.

For each domain: a random-init demo encoder behind its evaluation transform (`Preprocessed`), 384 evaluation items,
one untimed pass to warm the caches (CLAHE's memo), then `--repeats` timed passes per batch size, alternating. Reports
seconds per pass, the ratio to batch 64 (what every domain used before `Domain.cpu_eval_batch`) and the largest
difference of the features from batch 64's. Writes `results/eval_batch-<machine>.{csv,md}`.
"""
import argparse, platform, time
from pathlib import Path
import pandas as pd, torch
from sslmed.core import machine_tag

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", nargs="+", default=["angio", "ecg", "fundus", "neuro"])
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 4, 8, 16, 32, 128])
    ap.add_argument("--items", type=int, default=384)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from sslmed.protocols import pretrain, eval_datasets, load_run, load_backbone
    from sslmed.domain import get_domain
    from sslmed.features import extract_features, Preprocessed
    rows = []
    for d in a.domains:
        run = pretrain(d, "random", "demo", 0)
        cfg, _ = load_run(run)
        model = Preprocessed(load_backbone(Path(run) / "backbone.pt"), get_domain(d).eval_tf(**cfg.views_kw)).eval()
        items = torch.utils.data.Subset(eval_datasets(d, "demo", 0)[1], range(a.items))
        ref = extract_features(model, items, batch_size=64, progress=False).x  # also the warm-up
        for r in range(a.repeats):
            for b in a.batches:
                t = time.perf_counter(); x = extract_features(model, items, batch_size=b, progress=False).x
                rows.append(dict(domain=d, encoder=cfg.encoder, batch=b, repeat=r, seconds=time.perf_counter() - t,
                                 max_abs_diff=(x - ref).abs().max().item()))
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    t = df.groupby(["domain", "encoder", "batch"]).agg(seconds=("seconds", "median"), max_abs_diff=("max_abs_diff", "max")).reset_index()
    t["speedup_vs_64"] = (t.merge(t[t.batch == 64][["domain", "seconds"]], on="domain", suffixes=("", "_64")).eval("seconds_64 / seconds"))
    out = Path(__file__).parent / "results" / f"eval_batch-{machine_tag()}"
    t.to_csv(f"{out}.csv", index=False, float_format="%.4g")
    Path(f"{out}.md").write_text(f"# Feature extraction against batch size on {machine_tag()} ({platform.processor() or platform.machine()})\n\n"
        f"{__doc__.strip()}\n\n{a.items} items per pass, median of {a.repeats} passes, 1 thread.\n\n{t.to_markdown(index=False, floatfmt='.4g')}\n")
    print(t.to_markdown(index=False, floatfmt='.4g'))

if __name__ == "__main__": main()
