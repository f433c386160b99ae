#!/usr/bin/env python
"""Fundus preprocessing throughput, cold vs cached: images per second through `GradedImages.load` (decode, crop to the
field of view, short-side resize, square crop) without a cache, filling a cache (cold) and reading it back (cached).

Writes synthetic photographs like the real ones (JPEG, black border, sizes from 640x480 up to 4000x3000 with `--full`),
reads them as an EyePACS folder, and reports the ratio cached / uncached — a ratio, not an absolute claim: absolute
numbers depend on the disk, the CPU and what else runs. The synthetic JPEGs are smaller than real ones of the same size
(flat colours compress well), so the SHA-256 each cached read pays is cheaper here than on EyePACS (~2-6 MB files). Prints a table and writes
`benchmarks/results/fundus_preprocess-<machine>.csv` (`sslmed.core.machine_tag()`).

    python benchmarks/fundus_preprocess.py           # 12 photographs up to 2000 px, size 512 (about half a minute)
    python benchmarks/fundus_preprocess.py --full    # 12 photographs up to 4000 x 3000
"""
import argparse, csv, platform, tempfile, time
from pathlib import Path
import numpy as np
import pandas as pd
from sslmed.core import machine_tag
from sslmed.domains.fundus import EyePACS, fixture_photo, save_fixture_photo

def write_photos(root: Path, n: int, full: bool) -> list[tuple[int, int]]:
    "An EyePACS-layout folder of `n` JPEG photographs of mixed sizes; returns their sizes."
    sizes = [(640, 480), (1024, 768), (2000, 1500)] + ([(3000, 2000), (4000, 3000)] if full else [(1600, 1600)])
    rng, names, out = np.random.default_rng(0), [], []
    for k in range(n):
        wh = sizes[k % len(sizes)]
        save_fixture_photo(root / "train" / f"{k}_left.jpeg", fixture_photo(rng, k % 5, wh, clip=k % 3 == 2))
        names.append(f"{k}_left"); out.append(wh)
    pd.DataFrame({"image": names, "level": [k % 5 for k in range(n)]}).to_csv(root / "trainLabels.csv", index=False)
    return out

def pass_time(ds) -> float:
    "Seconds to load every item once."
    t0 = time.perf_counter()
    for k in range(len(ds)): ds[k]
    return time.perf_counter() - t0

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="cached passes (the best is reported)")
    ap.add_argument("--full", action="store_true", help="include 3000x2000 and 4000x3000 photographs")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sslmed-bench-fundus-") as tmp:
        root = Path(tmp) / "eyepacs"
        sizes = write_photos(root, a.n, a.full)
        mpix = sum(w * h for w, h in sizes) / a.n / 1e6
        mbytes = sum(f.stat().st_size for f in (root / "train").iterdir()) / a.n / 1e6  # hashed on every cached read
        plain = EyePACS(root, size=a.size)
        t_plain = min(pass_time(plain) for _ in range(2))
        cached = EyePACS(root, size=a.size, cache_dir=Path(tmp) / "cache")
        t_cold = pass_time(cached)
        t_warm = min(pass_time(cached) for _ in range(a.repeats))
        assert cached.cache.misses == a.n and cached.cache.hits == a.n * a.repeats
    rows = []
    for mode, t in (("no cache", t_plain), ("cache cold (fill)", t_cold), ("cache warm", t_warm)):
        rows.append({"machine": machine_tag(), "node": platform.node(), "mode": mode, "images": a.n, "mean_megapixels": round(mpix, 2), "mean_file_mb": round(mbytes, 3),
                     "size": a.size, "seconds": round(t, 4), "images_per_s": round(a.n / t, 2),
                     "speedup_vs_no_cache": round(t_plain / t, 2)})
    print(f"{'mode':<20}{'images/s':>10}{'x no cache':>12}   ({a.n} JPEGs, mean {mpix:.2f} Mpx, {mbytes:.2f} MB, short side -> {a.size})")
    for r in rows: print(f"{r['mode']:<20}{r['images_per_s']:>10.1f}{r['speedup_vs_no_cache']:>12.2f}")
    out = Path(a.out) / f"fundus_preprocess-{machine_tag()}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    from sslmed.core import atomic_path
    with atomic_path(out) as t, open(t, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
    print(f"wrote {out}")

if __name__ == "__main__": main()
