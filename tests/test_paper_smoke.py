"""`sslmed paper` runs an experiment notebook end to end and writes its artifacts with a complete manifest."""
import json, os, subprocess, sys
from pathlib import Path
from conftest import ROOT

def run_cli(cwd, *args):
    exe = Path(sys.executable).parent / "sslmed"
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=900)

def test_sigreg_properties_end_to_end(repo_copy):
    prof = repo_copy / "nbs/experiments/profiles/smoke/sigreg_properties.yaml"
    prof.write_text("seed: 3\nNs: [64, 256, 1024]\nrepeats: 2\nslice_counts: [4, 64]\nn_design: 256\n")
    r = run_cli(repo_copy, "paper", "--profile", "smoke", "--only", "sigreg_properties")
    assert r.returncode == 0, r.stdout + r.stderr
    out = repo_copy / "figures/smoke"
    m = json.loads((out / "manifest.json").read_text())
    assert {"F1a_sigreg_vs_n", "F1b_sigreg_vs_slices", "F1c_sigreg_vs_tmax", "F7_sigreg_cost"} <= set(m)
    for name, e in m.items():
        assert e["profile"] == "smoke" and e["notebook"] == "sigreg_properties"
        assert e["parameters"]["seed"] == 3 and e["parameters"]["Ns"] == [64, 256, 1024]  # the profile won
        assert e["git"].keys() == {"sha", "dirty"} and e["versions"]["torch"] and e["device"]["cpu"]
        for f in e["files"]: assert (out / f).stat().st_size > 0, f
    figs = [e for e in m.values() if e["kind"] == "figure"]
    assert all(sorted(Path(f).suffix for f in e["files"]) == [".pdf", ".png"] for e in figs)
    md = (out / "tables/F1a_sigreg_vs_n.md").read_text()
    assert "profile: smoke" in md and "not paper results" in md
    assert (repo_copy / "runs/smoke/sigreg_properties.ipynb").is_file()  # the executed copy, not the source

def test_failing_notebook_is_reported_and_does_not_stop_others(repo_copy):
    prof = repo_copy / "nbs/experiments/profiles/smoke/sigreg_properties.yaml"
    prof.write_text("Ns: [64]\nrepeats: 1\nslice_counts: [4]\nn_design: 64\nbenchmark_glob: /nonexistent/*.csv\n")
    r = run_cli(repo_copy, "paper", "--profile", "smoke", "--only", "sigreg_properties")
    assert r.returncode == 1
    assert "failed" in r.stdout and "FileNotFoundError" in r.stdout and "make bench" in r.stdout, r.stdout
    assert (repo_copy / "runs/smoke/sigreg_properties.ipynb").is_file()  # failed runs are kept too
