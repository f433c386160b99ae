#!/usr/bin/env python
"""Neuro preprocessing throughput: series per second read cold (decode, reorient, resample, crop, cache write) against
read from the content-keyed cache (SHA-256 of the source bytes, then `torch.load`).

Writes a small collection of realistic sizes — an axial CT DICOM series, its NIfTI copy, an MR NIfTI volume — plus the
registered fixture (`write_neuro_fixture`), reads every series through `NeuroStudies` at the full recipe's settings
(1.5 mm, 8³ tokens of 16³ voxels) with an empty cache (cold), then again (cached). Prints a table and writes
`benchmarks/results/neuro_preprocess-<machine>.csv` (`sslmed.core.machine_tag()`). Times are the best of `--repeats`.

    python benchmarks/neuro_preprocess.py            # about a minute on 2 cores
    python benchmarks/neuro_preprocess.py --quick    # small volumes, a few seconds
"""
import argparse, csv, shutil, tempfile, time, warnings
from pathlib import Path
import numpy as np, torch
from sslmed.core import machine_tag
from sslmed.data.core import DataWarning
from sslmed.domains.neuro import NeuroStudies, head_phantom, write_dicom_series, write_nifti, write_neuro_fixture

def write_collection(root: Path, quick: bool):
    "Realistic series (smaller with `quick`) and the fixture's studies."
    s = 4 if quick else 1
    ct = head_phantom((40 // s, 512 // s, 512 // s), seed=0)
    write_dicom_series(root / "big_ct/CT_BrainWindow", ct, spacing=(5.0, 0.45 * s, 0.45 * s))
    write_nifti(root / "big_ct/ct_bone.nii.gz", ct, spacing=(5.0, 0.45 * s, 0.45 * s))
    mr = np.round(np.clip(head_phantom((160 // s, 200 // s, 170 // s), bleed=False, seed=1) + 1000, 0, 1200) / 2)
    write_nifti(root / "big_mr/t1.nii.gz", mr, spacing=(1.0 * s, 1.0 * s, 1.0 * s))
    write_neuro_fixture(root / "_fx")
    for d in (root / "_fx").iterdir(): d.rename(root / d.name)
    (root / "_fx").rmdir()

def timed(ds, i: int) -> float:
    t = time.perf_counter(); ds[i]; return time.perf_counter() - t

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true"); ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="sslmed-neuro-bench-"))
    warnings.simplefilter("ignore", DataWarning)
    try:
        write_collection(tmp / "data", a.quick)
        kw = dict(spacing=(1.5, 1.5, 1.5), max_crop_size=(8, 8, 8), patch_size=16)
        NeuroStudies(tmp / "data", **kw)[0]  # import MONAI once, outside the timings
        rows = []
        for rep in range(a.repeats):
            cache = tmp / f"cache{rep}"
            ds = NeuroStudies(tmp / "data", cache_dir=cache, **kw)
            for i, it in enumerate(ds.items):
                mb = sum(f.stat().st_size for f in it["files"]) / 2 ** 20
                cold, warm = timed(ds, i), timed(ds, i)
                rows.append(dict(series=Path(it["path"]).relative_to(tmp / "data").as_posix(), kind=it["kind"],
                                 files=len(it["files"]), source_mb=round(mb, 2), cold_s=cold, cached_s=warm))
        best = {}
        for r in rows:
            b = best.setdefault(r["series"], dict(r))
            b["cold_s"], b["cached_s"] = min(b["cold_s"], r["cold_s"]), min(b["cached_s"], r["cached_s"])
        out = list(best.values())
        tot = dict(series="ALL", kind="-", files=sum(r["files"] for r in out), source_mb=round(sum(r["source_mb"] for r in out), 2),
                   cold_s=sum(r["cold_s"] for r in out), cached_s=sum(r["cached_s"] for r in out))
        out.append(tot)
        machine = machine_tag()
        print(f"{'series':34s} {'kind':6s} {'files':>5s} {'MB':>7s} {'cold s':>8s} {'cached s':>9s} {'speedup':>8s}")
        for r in out:
            r.update(machine=machine, threads=torch.get_num_threads(), quick=a.quick, speedup=round(r["cold_s"] / r["cached_s"], 1),
                     cold_s=round(r["cold_s"], 4), cached_s=round(r["cached_s"], 4))
            print(f"{r['series']:34s} {r['kind']:6s} {r['files']:5d} {r['source_mb']:7.2f} {r['cold_s']:8.3f} {r['cached_s']:9.4f} {r['speedup']:8.1f}")
        n = len(out) - 1
        print(f"throughput: {n / tot['cold_s']:.2f} series/s cold, {n / tot['cached_s']:.1f} series/s cached")
        f = Path(a.out) / f"neuro_preprocess-{machine}.csv"
        f.parent.mkdir(parents=True, exist_ok=True)
        cols = ["machine", "threads", "quick", "series", "kind", "files", "source_mb", "cold_s", "cached_s", "speedup"]
        with open(f, "w", newline="") as fh:
            w = csv.DictWriter(fh, cols, extrasaction="ignore"); w.writeheader(); w.writerows(out)
        print(f"wrote {f}")
    finally: shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__": main()
