#!/usr/bin/env python
"""What the integrity guards of issue 26 cost on the full-profile readers' throughput, with and without a cache.

Two kinds of guard:

- **skip-mode settle** (`ReaderDataset.settle`): under `on_error="skip"` the first look at a reader loads every item once
  and removes those that fail. That is one extra pass, paid once per dataset object: reported as `settle_s` next to the
  time of one epoch (`epoch_s`) through the same reader. With a cache (fundus photographs, neuro volumes) the settle pass
  is the pass that fills the cache, so the first epoch after it is already a cached one.
- **per-item checks** added on the load path: the MIMIC `.npy` ±20 mV range (`check_mv_range`), the raw NIfTI header
  read and the pixdim check (`raw_nifti_header`, `check_pixdim`), the shear test (`is_sheared`), and the PTB-XL fixed
  vocabulary (`check_vocabulary`, once per construction). Each is timed alone on the readers' own data and reported as
  microseconds per item and as a share of that reader's load time per item.

The data are the fixtures the full profile's readers are tested on (`sslmed.protocols.write_fixtures`), enlarged where a
fixture is tiny; timings are ratios on one machine, not absolute claims. Prints a table and writes
`benchmarks/results/integrity_guards-<machine>.csv` (`sslmed.core.machine_tag()`).

    python benchmarks/integrity_guards.py            # about two minutes on 2 CPU cores
"""
import argparse, platform, tempfile, time, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import nibabel as nib
from sslmed.core import machine_tag
from sslmed.data.core import DataWarning
from sslmed.domains.angio import ARCADE, make_arcade_fixture
from sslmed.domains.ecg import (PTBXL, MIMICECG, PTBXL_LABELS, check_mv_range, check_vocabulary, make_mimic_ecg_fixture,
                                make_ptbxl_fixture)
from sslmed.domains.fundus import APTOS, make_aptos_fixture
from sslmed.domains.neuro import NeuroStudies, check_pixdim, is_sheared, raw_nifti_header, write_neuro_fixture

def timed(fn, repeats: int = 1) -> float:
    "The best of `repeats` wall times of `fn()`, in seconds."
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t0)
    return best

def epoch(ds):
    for k in range(len(ds)): ds[k]

def reader_rows(name: str, make, mode: str, repeats: int) -> dict:
    "Settle time (a fresh skip-mode reader's first `len`) and one epoch's time through the settled reader."
    t0 = time.perf_counter(); ds = make(); t_open = time.perf_counter() - t0
    if ds._settled:  # a reader that looks at its items while opening (PTB-XL builds its record table) settled inside make():
        t_settle = timed(lambda: (setattr(ds, "_settled", False), ds.settle()))  # one more settle pass over the same items
    else: t_settle = timed(lambda: len(ds))
    t_epoch = timed(lambda: epoch(ds), repeats)
    return {"reader": name, "mode": mode, "items": len(ds), "lost": ds.lost, "open_s": round(t_open, 4), "settle_s": round(t_settle, 4),
            "epoch_s": round(t_epoch, 4), "items_per_s": round(len(ds) / t_epoch, 1), "settle_per_epoch": round(t_settle / t_epoch, 2)}

def guard_row(reader: str, guard: str, per_item_s: float, load_per_item_s: float, note: str = "") -> dict:
    return {"reader": reader, "guard": guard, "us_per_item": round(per_item_s * 1e6, 2),
            "share_of_load_pct": round(100 * per_item_s / load_per_item_s, 3), "note": note}

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="epochs timed per reader (the best is reported)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    warnings.simplefilter("ignore", DataWarning)
    rows, guards = [], []
    with tempfile.TemporaryDirectory(prefix="sslmed-bench-guards-") as tmp:
        t = Path(tmp)
        make_arcade_fixture(t / "arcade", n_images=24, size=256)
        make_ptbxl_fixture(t / "ptbxl", n_records=120, rates=(500,))
        make_mimic_ecg_fixture(t / "mimic", n_records=120)
        make_aptos_fixture(t / "aptos", n=60)
        write_neuro_fixture(t / "neuro", seed=0)
        skip = dict(on_error="skip")
        readers = [  # the full profile's readers and arguments (recipes/full), on fixtures
            ("arcade pretrain frames", lambda: ARCADE.unlabeled(t / "arcade", size=512, **skip), "uncached"),
            ("arcade train (labelled)", lambda: ARCADE(t / "arcade", "both", "train", "stenosis", size=512, **skip), "uncached"),
            ("ptbxl train 500 Hz", lambda: PTBXL(t / "ptbxl", split="train", sampling_rate=500, fs=500, labels=PTBXL_LABELS, **skip), "uncached"),
            ("mimic_ecg npy", lambda: MIMICECG(t / "mimic", fs=500, **skip), "uncached"),
            ("aptos all, size 512", lambda: APTOS(t / "aptos", "all", size=512, **skip), "uncached"),
            ("neuro studies", lambda: NeuroStudies(t / "neuro", **skip), "uncached"),
        ]
        import monai.transforms  # noqa: F401  (imported once here, so that no reader's first pass pays for it)
        for name, make, mode in readers: rows.append(reader_rows(name, make, mode, a.repeats))
        for name, make in (("aptos all, size 512", lambda: APTOS(t / "aptos", "all", size=512, cache_dir=t / "c_fundus", **skip)),
                           ("neuro studies", lambda: NeuroStudies(t / "neuro", cache_dir=t / "c_neuro", **skip))):
            rows.append(reader_rows(name, make, "cache cold (settle fills it)", a.repeats))
            rows.append(reader_rows(name, make, "cache warm", a.repeats))
        per = {(r["reader"], r["mode"]): r["epoch_s"] / r["items"] for r in rows}
        # per-item guards, each timed alone on the reader's own data
        arr = np.load(next((t / "mimic").glob("*.npy")), mmap_mode="r")
        x = [np.asarray(arr[k], np.float32) for k in range(len(arr))]
        n = 20
        g = timed(lambda: [check_mv_range(v, "f", "signal") for _ in range(n) for v in x]) / (n * len(x))
        guards.append(guard_row("mimic_ecg npy", "check_mv_range (±20 mV)", g, per[("mimic_ecg npy", "uncached")]))
        niis = sorted((t / "neuro").rglob("*.nii*"))
        g = timed(lambda: [check_pixdim(raw_nifti_header(f), f) for _ in range(n) for f in niis]) / (n * len(niis))
        for mode in ("uncached", "cache warm"):
            guards.append(guard_row("neuro studies", "raw NIfTI header + pixdim", g, per[("neuro studies", mode)],
                                    "paid on preprocessing only: a cached read skips it" if mode == "cache warm" else "NIfTI series only"))
        aff = [nib.load(f).affine for f in niis]
        g = timed(lambda: [is_sheared(A) for _ in range(200) for A in aff]) / (200 * len(aff))
        guards.append(guard_row("neuro studies", "is_sheared", g, per[("neuro studies", "uncached")], "every series, on preprocessing"))
        ds = PTBXL(t / "ptbxl", split="train", sampling_rate=500, fs=500, labels=PTBXL_LABELS)
        g = timed(lambda: [check_vocabulary(ds.statements, task, ds.st_file) for task in ("superdiagnostic", "rhythm")], 20)
        guards.append(guard_row("ptbxl train 500 Hz", "check_vocabulary (per construction)", g / len(ds),
                                per[("ptbxl train 500 Hz", "uncached")], f"{g * 1e3:.2f} ms once per reader, spread over its items"))
    machine = machine_tag()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    R = pd.DataFrame(rows).assign(machine=machine, node=platform.node())
    G = pd.DataFrame(guards).assign(machine=machine, node=platform.node())
    R.to_csv(out / f"integrity_guards_readers-{machine}.csv", index=False)
    G.to_csv(out / f"integrity_guards-{machine}.csv", index=False)
    print(f"machine: {machine} ({platform.node()})\n")
    print(R.drop(columns=["machine", "node"]).to_markdown(index=False)); print()
    print(G.drop(columns=["machine", "node"]).to_markdown(index=False))

if __name__ == "__main__":
    main()
