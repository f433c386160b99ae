"""Every experiment notebook is runnable by papermill under every profile, and its profile files are valid."""
import ast, json, re
import pytest, yaml
from sslmed.paper import PAPER_IDS, list_experiments, load_profile, notebook_parameters, readme_from_index
from conftest import ROOT

NAMES = list_experiments(ROOT)

def test_there_are_experiments():
    assert "sigreg_properties" in NAMES

@pytest.mark.parametrize("name", NAMES)
def test_exactly_one_parameters_cell_with_smoke_defaults(name):
    # nbdev-clean must keep the `parameters` tag, or papermill would let the defaults override the profile
    params = notebook_parameters(ROOT / "nbs/experiments" / f"{name}.ipynb")
    assert ast.literal_eval(params.get("profile", "None")) == "smoke", params
    for k, v in params.items():  # `--plan` and T7 read every default back: a value papermill cannot read (one spread over lines) breaks them
        try: ast.literal_eval(v)
        except (SyntaxError, ValueError) as e: raise AssertionError(f"{name}: parameter {k} = {v!r} is not one literal on one line") from e

@pytest.mark.parametrize("profile", ["smoke", "demo", "full", "full-dryrun"])   # every notebook in every profile
@pytest.mark.parametrize("name", NAMES)
def test_profile_files_only_set_declared_parameters(name, profile):
    p = load_profile(profile, name, ROOT)
    assert p["profile"] == profile

def test_unknown_profile_key_is_an_error(repo_copy):
    f = repo_copy / "nbs/experiments/profiles/smoke/sigreg_properties.yaml"
    f.write_text(yaml.safe_dump({"num_slice": 10}))  # misspelt
    with pytest.raises(ValueError, match=r"sigreg_properties.yaml: unknown parameter\(s\) \['num_slice'\]"):
        load_profile("smoke", "sigreg_properties", repo_copy)

def test_readme_matches_index_notebook():
    assert (ROOT / "README.md").read_text() == readme_from_index(ROOT), "README.md is stale: run `make readme`"

def _saved_ids(name) -> set:
    "The PAPER.md ids (quoted `T<k>` / `F<k>`) that an experiment notebook's code cells name."
    nb = json.loads((ROOT / "nbs/experiments" / f"{name}.ipynb").read_text())
    return set(re.findall(r'"([TF]\d+)"', "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")))

def test_reproduce_doc_lists_every_notebook_and_paper_artifact():
    # docs/reproduce.md's table: each experiment notebook with the ids its code saves, every PAPER.md id; F3 twice (its
    # collapse experiment, F3b, has a notebook of its own), every other id exactly once
    rows = re.findall(r"^\| `(\w+)` \| ((?:[TF]\d+, )*[TF]\d+) \|", (ROOT / "docs/reproduce.md").read_text(), re.M)
    table = {name: ids.split(", ") for name, ids in rows}
    assert sorted(table) == sorted(NAMES), sorted(set(table) ^ set(NAMES))
    for name, ids in table.items(): assert set(ids) == _saved_ids(name), (name, ids, _saved_ids(name))
    assert sorted(i for ids in table.values() for i in ids) == sorted([*PAPER_IDS, "F3"])
