"""The docs site as a quick build makes it (`sslmed docs --no-execute`, no notebook executed): maths typeset offline by
the vendored MathJax, the library pages' plots from docs/outputs/, and the experiment pages' committed figures."""
import json, re, shutil, subprocess, sys
from pathlib import Path
import nbformat
import pytest
from conftest import ROOT
from sslmed.docs import cell_key, library_notebooks, load_outputs

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The site built with `--profile full` (nothing ran under full here) from a copy of the checkout; (site, stdout)."
    root = tmp_path_factory.mktemp("repo")
    for d in ("nbs", "docs", "data_cards", "figures"): shutil.copytree(ROOT / d, root / d)
    for f in ("README.md", "pyproject.toml"): shutil.copy(ROOT / f, root / f)
    r = subprocess.run([sys.executable, "-m", "sslmed.cli", "docs", "--profile", "full", "--no-execute"], cwd=root,
                       capture_output=True, text=True, timeout=180)  # the quick build is meant to take well under 3 minutes
    assert r.returncode == 0, r.stdout + r.stderr
    return root / "_site", r.stdout


def plotted(src: Path) -> bool:
    "Whether executing the notebook draws a figure: one of its stored cells holds an image."
    cache = load_outputs(ROOT / "docs" / "outputs")
    cells = [c for c in nbformat.read(str(src), as_version=4).cells if c.cell_type == "code"]
    return any("image/png" in o.get("data", {}) for c in cells for o in cache.get(cell_key(c.source), []))


def test_quick_build_executes_nothing(site):
    _, out = site
    assert "executing" not in out and "site written to" in out, out


def test_maths_is_typeset_by_the_vendored_mathjax(site):
    s, _ = site
    assert (s / "assets/mathjax/tex-svg.js").stat().st_size > 1_000_000
    page = (s / "api/01_sigreg.html").read_text()
    assert '<script src="../assets/mathjax-config.js"></script>' in page and '<script src="../assets/mathjax/tex-svg.js"></script>' in page
    assert "$$EP = N \\int" in page and 'class="jp-RenderedHTMLCommon jp-RenderedMarkdown jp-MarkdownOutput"' in page
    cfg = (s / "assets/mathjax-config.js").read_text()
    assert '["$", "$"]' in cfg and '["\\\\(", "\\\\)"]' in cfg and "ignoreHtmlClass" not in cfg  # every <p> of a notebook searched
    for page in s.rglob("*.html"):  # offline: no script from the web on any page
        assert not re.search(r'<script[^>]+src="(https?:)?//', page.read_text()), page


def test_every_library_notebook_with_a_plot_shows_one(site):
    s, _ = site
    with_plots = [p for p in library_notebooks(ROOT) if plotted(p)]
    assert {"01_sigreg.ipynb", "43_reports.ipynb"} <= {p.name for p in with_plots}, with_plots
    for p in with_plots:
        page = (s / "api" / f"{p.stem}.html").read_text()
        assert re.search(r'<img [^>]*src="data:image/png;base64,', page), f"{p.name}: no output image on its page (`sslmed docs` refreshes docs/outputs/)"
    assert not re.search(r'<img [^>]*src="data:image/png;base64,', (s / "api/00_core.html").read_text())  # a page without plots has none


def test_experiment_pages_show_the_committed_results(site):
    s, _ = site
    page = (s / "experiments/main_results.html").read_text()
    assert '<img alt="T1_main_ci" src="../figures/demo/T1_main_ci.png"/>' in page
    assert (s / "figures/demo/T1_main_ci.png").is_file()
    assert "Results committed for profile <code>smoke</code>" in page and "Results committed for profile <code>demo</code>" in page
    assert "sslmed T1 · profile: demo · data: procedural phantoms" in page  # the provenance line under the figure
    nav = (s / "index.html").read_text()
    assert nav.count("(not run yet)") >= len(list((ROOT / "nbs/experiments").glob("[!_]*.ipynb")))  # no figures/full here
