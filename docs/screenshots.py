"""Regenerate the screenshots in figures/docs/ from the built site (`sslmed docs --no-execute` first) with headless Chromium.

    python docs/screenshots.py [--site _site] [--chromium chromium]

Each page is opened from disk (file://, no server, no network) in a fresh profile, given a few seconds of virtual time for
MathJax to typeset, and saved as a PNG of fixed size, so that a rerun on the same site gives the same pictures."""
import argparse, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"home.png": ("index.html", 1280, 1400),                       # the README as the site's home page
         "api_sigreg.png": ("api/01_sigreg.html", 1280, 2000),         # maths typeset, a plot from docs/outputs/
         "experiment_main_results.png": ("experiments/main_results.html", 1280, 2000)}  # T1 with its provenance
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars", "--force-device-scale-factor=1",
         "--virtual-time-budget=8000"]


def screenshot(chromium: str, page: Path, out: Path, width: int, height: int):
    "One page as a `width`×`height` PNG at `out`."
    with tempfile.TemporaryDirectory(prefix="sslmed-chromium-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={out}",
               page.resolve().as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if not out.is_file(): raise RuntimeError(f"chromium wrote no screenshot of {page}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--site", default=str(ROOT / "_site"), help="the built site")
    p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    p.add_argument("--out", default=str(ROOT / "figures" / "docs"))
    a = p.parse_args(argv)
    site, out = Path(a.site), Path(a.out)
    if not (site / "index.html").is_file(): sys.exit(f"{site}/index.html not found: build the site first (sslmed docs --no-execute)")
    out.mkdir(parents=True, exist_ok=True)
    for name, (page, w, h) in PAGES.items():
        screenshot(a.chromium, site / page, out / name, w, h)
        print(f"{out / name}  <- {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
