"""Every experiment notebook is runnable by papermill under both profiles, and its profile files are valid."""
import ast
import pytest, yaml
from sslmed.paper import list_experiments, load_profile, notebook_parameters, readme_from_index
from conftest import ROOT

NAMES = list_experiments(ROOT)

def test_there_are_experiments():
    assert "sigreg_properties" in NAMES

@pytest.mark.parametrize("name", NAMES)
def test_exactly_one_parameters_cell_with_smoke_defaults(name):
    # nbdev-clean must keep the `parameters` tag, or papermill would let the defaults override the profile
    params = notebook_parameters(ROOT / "nbs/experiments" / f"{name}.ipynb")
    assert ast.literal_eval(params.get("profile", "None")) == "smoke", params

@pytest.mark.parametrize("profile", ["smoke", "full"])
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
