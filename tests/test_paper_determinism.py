"""Two runs of the same experiment give byte-identical tables and the same manifest (but timestamps and wall times)."""
import json
from pathlib import Path
from sslmed.paper import VOLATILE
from test_paper_smoke import run_cli

REDUCED = "Ns: [64, 256]\nrepeats: 2\nslice_counts: [4, 64]\nt_maxes: [1.0, 3.0]\nn_design: 256\n"

def snapshot(root: Path):
    out = root / "figures/smoke"
    tables = {p.name: p.read_bytes() for p in sorted((out / "tables").glob("*")) if p.suffix in (".csv", ".md")}
    m = json.loads((out / "manifest.json").read_text())
    for e in m.values():
        for k in VOLATILE: e.pop(k)
    return tables, m

def test_two_runs_are_identical(repo_copy):
    (repo_copy / "nbs/experiments/profiles/smoke/sigreg_properties.yaml").write_text(REDUCED)
    shots = []
    for _ in range(2):
        r = run_cli(repo_copy, "paper", "--profile", "smoke", "--only", "sigreg_properties")
        assert r.returncode == 0, r.stdout + r.stderr
        shots.append(snapshot(repo_copy))
    (t1, m1), (t2, m2) = shots
    assert t1 and t1.keys() == t2.keys()
    for name in t1: assert t1[name] == t2[name], f"table {name} differs between two runs"
    assert m1 == m2

def test_resume_skips_unchanged_notebooks(repo_copy):
    (repo_copy / "nbs/experiments/profiles/smoke/sigreg_properties.yaml").write_text(REDUCED)
    args = ("paper", "--profile", "smoke", "--only", "sigreg_properties", "--resume")
    first, second = run_cli(repo_copy, *args), run_cli(repo_copy, *args)
    assert first.returncode == 0 and "sigreg_properties  ok" in first.stdout, first.stdout + first.stderr
    assert "cached" in second.stdout, second.stdout
    (repo_copy / "nbs/experiments/profiles/smoke/sigreg_properties.yaml").write_text(REDUCED + "seed: 1\n")
    third = run_cli(repo_copy, *args)                      # a changed parameter reruns it
    assert "sigreg_properties  ok" in third.stdout, third.stdout
