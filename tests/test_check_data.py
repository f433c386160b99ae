"""`sslmed check-data`: every dataset root the full profile names is opened with `on_error="skip"`; counts, label balance
and shapes agree with an independent pass over the same readers, and every corrupt file is named, with its field, in
the table and in the quarantine CSV; a missing or empty root is reported, not a trace."""
import contextlib, io, os
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from sslmed.data.core import DataError
from sslmed.domain import get_domain
from sslmed.protocols import cell, check_data, profile_datasets, write_fixtures

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def fixture_roots(tmp_path_factory):
    "Every dataset of the full profile, written small by its domain's fixture writer; the env vars pointing at them."
    env, sources = write_fixtures(tmp_path_factory.mktemp("data"), "full")
    missing = {k: v for k, v in sources.items() if v.startswith("no fixture writer")}
    assert not missing, missing
    return env


@pytest.fixture
def roots(fixture_roots, monkeypatch):
    for k, v in fixture_roots.items(): monkeypatch.setenv(k, v)
    return fixture_roots


@pytest.fixture(scope="module")
def report(fixture_roots, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "quarantine.csv"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in fixture_roots.items(): mp.setenv(k, v)
        summary, bad = check_data("full", out)
    return summary, bad, out


def test_every_dataset_the_profile_names_has_a_row(report):
    summary, _, _ = report
    specs = profile_datasets("full")
    assert list(summary.dataset) == [s["dataset"] for s in specs]
    assert list(summary.role) == [s["role"] for s in specs]
    assert {r.split(" ")[0] for s in specs for r in s["role"].split(", ")} == {"pretrain", "eval"}


def test_counts_agree_with_an_independent_pass(report, roots):
    "items, loaded, corrupt and the class counts, recomputed item by item through `__getitem__`-free loads."
    summary, bad, _ = report
    for s, row in zip(profile_datasets("full"), summary.itertuples()):
        if row.error: continue
        dom = get_domain(s["domain"])
        kw = {k: v for k, v in s["kw"].items() if k not in ("on_error", "quarantine", "quarantine_log")}
        ds = dom.datasets[s["dataset"]](root=os.environ[s["env"]], on_error="skip", **kw)
        ok, labels = len(ds), []                       # skip mode: the items that fail to load are removed, so len counts the good ones
        for i in range(len(ds)):
            x, lab = ds[i]                             # every index loads: no bad item is left to stand in for
            if dom.label_key in lab and np.asarray(lab[dom.label_key]).size <= 64: labels.append(np.asarray(lab[dom.label_key]))
        assert (row.items, row.loaded) == (len(ds) + ds.lost, ok), (s, row)
        assert row.corrupt == len(bad[(bad.dataset == s["dataset"]) & (bad.args == row.args)])
        if labels and np.stack(labels).ndim == 1:   # class counts add up to the loaded items
            assert sum(int(t.split(":")[1]) for t in row.balance.split()) == ok, row.balance
        if ok: assert sum(int(t.rsplit(":", 1)[1]) for t in row.sizes.split() if ":" in t) <= ok


def test_corrupt_files_are_named_with_their_field_in_table_and_csv(report):
    summary, bad, out = report
    assert summary.corrupt.sum() == len(bad) > 0          # the fixtures carry corrupt files on purpose
    csv = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(csv.columns) == ["dataset", "args", "path", "field", "reason", "split"]
    assert len(csv) == len(bad)
    for r in csv.itertuples():
        assert r.field and r.reason, r
        if "[" not in r.path: assert Path(r.path).exists(), r.path   # a real file of the fixture, not a placeholder


def _files(item):
    "Paths of existing files inside a reader's item record (a path, or a tuple/list/dict/record holding some)."
    if isinstance(item, (str, Path)): return [Path(item)] if Path(item).is_file() else []
    if isinstance(item, dict): item = list(item.values())
    elif hasattr(item, "_asdict"): item = list(item._asdict().values())
    elif hasattr(item, "__dict__") and not isinstance(item, (list, tuple)): item = list(vars(item).values())
    return [f for x in (item if isinstance(item, (list, tuple)) else []) for f in _files(x)]


def test_a_file_corrupted_after_writing_is_quarantined(fixture_roots, tmp_path, monkeypatch):
    "Truncate the image of the first evaluation test item of each image dataset: check-data names exactly that file."
    import shutil
    for k, v in fixture_roots.items(): monkeypatch.setenv(k, v)
    targets = {}
    for s in profile_datasets("full"):
        if s["kw"].get("split") != "test" or s["dataset"] in targets: continue
        root = Path(os.environ[s["env"]])
        kw = {k: v for k, v in s["kw"].items() if k not in ("on_error", "quarantine", "quarantine_log")}
        try: ds = get_domain(s["domain"]).datasets[s["dataset"]](root=str(root), on_error="skip", **kw)
        except (DataError, TypeError): continue     # reported by the other tests
        imgs = [f for f in _files(ds.items[0]) if f.suffix.lower() in (".png", ".jpeg", ".jpg")] if len(ds) else []
        if not imgs: continue
        copy = tmp_path / s["dataset"]
        shutil.copytree(root, copy)
        victim = copy / imgs[0].resolve().relative_to(root.resolve())
        victim.write_bytes(victim.read_bytes()[:40])
        monkeypatch.setenv(s["env"], str(copy))
        targets[s["dataset"]] = victim
    assert targets, "no image dataset with a test split in the full profile"
    _, bad = check_data("full", tmp_path / "q.csv")
    for name, victim in targets.items():
        hit = bad[(bad.dataset == name) & (bad.path.map(lambda p: Path(p).resolve()) == victim.resolve())]
        assert len(hit) >= 1 and (hit.field == "image").all(), (name, victim, bad[bad.dataset == name].path.tolist())


def test_missing_and_empty_roots_are_reported_not_raised(report, fixture_roots, tmp_path, monkeypatch):
    "An unset variable is named; an empty root gives the reader's DataError (its file and field), recorded in the CSV."
    for k, v in fixture_roots.items(): monkeypatch.setenv(k, v)
    summary = report[0]
    envs = [s["env"] for s in profile_datasets("full")]
    readable = [e for e, err in zip(envs, summary.error) if not err]
    unset, empty = readable[0], next(e for e in readable if e != readable[0])
    monkeypatch.delenv(unset)
    (tmp_path / "empty").mkdir(); monkeypatch.setenv(empty, str(tmp_path / "empty"))
    summary, bad = check_data("full", tmp_path / "q.csv")
    for row, env in zip(summary.itertuples(), envs):
        if env == unset: assert row.error == f"${unset} is unset" and row.items == 0, row
        if env == empty:
            hit = bad[(bad.dataset == row.dataset) & (bad.args == row.args)]
            assert row.error and len(hit) >= 1, row
            assert all(p.startswith(str(tmp_path / "empty")) for p in hit.path), hit
            assert row.error == cell(f"{hit.field.iloc[-1]}: {hit.reason.iloc[-1]}")


def test_cli_prints_the_table_and_fails_on_a_missing_root(fixture_roots, tmp_path, monkeypatch):
    from sslmed.cli import main
    for k, v in fixture_roots.items(): monkeypatch.setenv(k, v)
    with contextlib.redirect_stdout(io.StringIO()) as o: rc = main(["check-data", "--profile", "full", "--out", str(tmp_path / "q.csv"), "--limit", "2"])
    text = o.getvalue()
    for s in profile_datasets("full"): assert s["dataset"] in text
    assert "quarantined file(s)" in text and (tmp_path / "q.csv").is_file()
    monkeypatch.delenv(profile_datasets("full")[0]["env"])
    with contextlib.redirect_stdout(io.StringIO()): assert main(["check-data", "--profile", "full", "--out", str(tmp_path / "q.csv"), "--limit", "1"]) == 1


def test_every_cell_is_a_summary_and_the_table_a_page_long(report):
    "No mask or volume is summed into a cell (neuro's 128³ masks were once 4.2 million characters): each cell is one short line."
    summary, bad, _ = report
    for col in summary.columns.drop("args"):   # args (the reader's arguments, the key into the CSV) is not printed
        for v in summary[col]:
            assert len(str(v)) <= 160 and "\n" not in str(v), (col, str(v)[:200])
    neuro = summary[summary.dataset == "neuro_studies"]
    assert len(neuro) and all(b == "unlabelled" or b.count(" ") < 20 for b in neuro.balance), neuro.balance.tolist()
    text = summary.drop(columns="args").to_markdown(index=False)
    assert len(text.splitlines()) == len(summary) + 2 and max(map(len, text.splitlines())) < 400   # a row per dataset, each one line


def test_quarantine_says_how_many_items_each_split_lost(report):
    "Every quarantined record carries the split that lost it; the summary's `lost` column counts them per split."
    summary, bad, _ = report
    for row in summary.itertuples():
        hit = bad[(bad.dataset == row.dataset) & (bad.args == row.args)]
        want = " ".join(f"{k or '-'}:{v}" for k, v in hit.split.fillna("").value_counts(sort=False).items())
        assert sorted(row.lost.split()) == sorted(want.split()), (row.dataset, row.lost, want)
        if not row.error: assert row.corrupt == len(hit)
    split = {r.args: __import__("json").loads(r.args).get("split") for r in summary.itertuples()}
    named = bad[bad.args.map(split).notna()]
    assert len(named) and (named.split == named.args.map(split)).all(), named[["dataset", "split", "args"]]
