"""ECG on real-format data: the bad-input corpus of the PTB-XL and MIMIC-IV-ECG readers (each case's outcome asserted), a
seeded random-corruption property (never silently wrong), the resumable WFDB -> npy converter killed with SIGKILL, the
full recipe's masks and labels, and the parity table of seed 001 against recipes/full/ecg.yaml."""
import ast, math, os, re, shutil, signal, subprocess, sys, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT
from sslmed.data.core import DataError
from sslmed.domain import get_domain, seed_overrides
from sslmed.domains import ecg as E
from sslmed.config import recipe
from sslmed.runs import TB_NAMES

E100 = "records100/00000/{:05d}_lr"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    "A 12-record PTB-XL at 100 Hz (irregular records included) and its signals."
    root = tmp_path_factory.mktemp("ptbxl") / "base"
    return root, E.make_ptbxl_fixture(root, n_records=12, rates=(100,))


def copy(base, tmp_path) -> Path:
    return Path(shutil.copytree(base[0], tmp_path / "ptbxl"))


def edit_db(root, fn):
    f = root / "ptbxl_database.csv"
    fn(pd.read_csv(f, dtype={"scp_codes": str})).to_csv(f, index=False)


def edit_header(root, eid, old, new):
    h = root / (E100.format(eid) + ".hea")
    h.write_text(h.read_text().replace(old, new))


def rewrite(root, base, eid, fn):
    s = fn(base[1][(eid, 100)].copy())
    E._write_wfdb(root / E100.format(eid), s, 100, E.STANDARD_LEADS)


def read_all(ds):
    return [ds[k] for k in range(len(ds))]


# (case id, how to break the fixture, what to do, expected error text); every error names a file and a field
def dup_id(r, b): edit_db(r, lambda df: pd.concat([df, df[df.ecg_id == 1].assign(strat_fold=10)]))
def dup_file(r, b): edit_db(r, lambda df: df.assign(filename_lr=df.filename_lr.where(df.ecg_id != 2, E100.format(1))))
def escape(r, b): edit_db(r, lambda df: df.assign(filename_lr=df.filename_lr.where(df.ecg_id != 2, "../outside/00002_lr")))
def absolute(r, b): edit_db(r, lambda df: df.assign(filename_lr=df.filename_lr.where(df.ecg_id != 2, "/etc/passwd")))
def no_path(r, b): edit_db(r, lambda df: df.assign(filename_lr=df.filename_lr.where(df.ecg_id != 4, "")))
def fold0(r, b): edit_db(r, lambda df: df.assign(strat_fold=df.strat_fold.where(df.ecg_id != 6, 0)))
def fold_text(r, b): edit_db(r, lambda df: df.assign(strat_fold=df.strat_fold.astype(str).where(df.ecg_id != 6, "ten")))
def fold_frac(r, b): edit_db(r, lambda df: df.assign(strat_fold=df.strat_fold.where(df.ecg_id != 6, 9.5)))
def bad_id(r, b): edit_db(r, lambda df: df.assign(ecg_id=df.ecg_id.astype(str).where(df.ecg_id != 8, "x8")))
def lik_nan(r, b): edit_db(r, lambda df: df.assign(scp_codes=df.scp_codes.where(df.ecg_id != 3, "{'NORM': float('nan')}")))
def lik_nan2(r, b): edit_db(r, lambda df: df.assign(scp_codes=df.scp_codes.where(df.ecg_id != 3, "{'NORM': -5.0}")))
def no_rhythm_vocab(r, b):
    st = pd.read_csv(r / "scp_statements.csv", index_col=0); st["rhythm"] = np.nan; st.to_csv(r / "scp_statements.csv")
def vocab_matches_nothing(r, b):
    st = pd.read_csv(r / "scp_statements.csv", index_col=0)
    st["form"] = np.nan; st.loc["XFORM"] = st.loc["ABQRS"]; st.loc["XFORM", "form"] = 1; st.to_csv(r / "scp_statements.csv")
def all_unknown(r, b):
    st = pd.read_csv(r / "scp_statements.csv", index_col=0); st.index = [f"Z{c}" for c in st.index]; st.to_csv(r / "scp_statements.csv")
def dup_statement(r, b):
    f = r / "scp_statements.csv"; lines = f.read_text().splitlines(keepends=True); f.write_text("".join(lines + lines[3:4]))
def _statements(r, fn):
    f = r / "scp_statements.csv"; fn(pd.read_csv(f, index_col=0)).to_csv(f)
def no_hyp(r, b): _statements(r, lambda st: st.drop(index="LVH"))          # the file lists four of the five superclasses
def extra_rhythm(r, b): _statements(r, lambda st: pd.concat([st, st.loc[["SR"]].rename(index={"SR": "WPW"})]))
def gain0(r, b): edit_header(r, 1, "1000.0(0)/mV", "0(0)/mV")
def gain_neg(r, b): edit_header(r, 1, "1000.0(0)/mV", "-1000.0(0)/mV")
def volts(r, b): edit_header(r, 1, "/mV", "/V")
def mmhg(r, b): edit_header(r, 1, "/mV", "/mmHg")
def huge(r, b): rewrite(r, b, 1, lambda s: np.where(np.arange(s.shape[1]) == 500, 21.0, s))
def nan_lead(r, b): rewrite(r, b, 1, lambda s: np.where(np.arange(12)[:, None] == 2, np.nan, s))
def flipped(r, b):
    f = r / (E100.format(1) + ".dat"); d = bytearray(f.read_bytes()); d[1001] ^= 0x40; f.write_bytes(bytes(d))
def rate(r, b): E._write_wfdb(r / E100.format(1), b[1][(1, 100)], 500, E.STANDARD_LEADS)

INIT, ITEM = "construct", "item 0"
CASES = [
    ("ecg_id listed twice (folds 1 and 10)", dup_id, INIT, "ptbxl_database.csv: field 'ecg_id': 1 value(s) repeat"),
    ("two ecg_ids share a record file", dup_file, INIT, "ptbxl_database.csv: field 'filename_lr': 1 value(s) repeat"),
    ("record path ../ out of the root", escape, INIT, "field 'filename_lr': path '../outside/00002_lr' resolves outside"),
    ("absolute record path", absolute, INIT, "field 'filename_lr': path '/etc/passwd' resolves outside"),
    ("empty record path", no_path, INIT, "field 'filename_lr': ecg_id=4: no record path"),
    ("strat_fold 0", fold0, INIT, "field 'strat_fold': ecg_id=6: label 0.0 outside the integers 1..10"),
    ("strat_fold not a number", fold_text, INIT, "field 'strat_fold': ecg_id=6: label 'ten' is not a number"),
    ("strat_fold 9.5", fold_frac, INIT, "field 'strat_fold': ecg_id=6: label 9.5 outside the integers 1..10"),
    ("ecg_id not an integer", bad_id, INIT, "field 'ecg_id': row ecg_id='x8': label 'x8' is not a number"),
    ("likelihood NaN", lik_nan, INIT, "field 'scp_codes': ecg_id=3: cannot parse"),
    ("likelihood negative", lik_nan2, INIT, "field 'scp_codes': ecg_id=3: likelihoods must lie in 0..100"),
    ("no rhythm statement in the vocabulary", no_rhythm_vocab, INIT, "scp_statements.csv: field 'rhythm': task 'rhythm' has the fixed classes ['AFIB', 'AFLT', 'BIGU', 'PACE', 'PSVT', "
     "'SARRH', 'SBRAD', 'SR', 'STACH', 'SVARR', 'SVTAC', 'TRIGU']; this file lacks ['AFIB', 'AFLT', 'BIGU', 'PACE', 'PSVT', "
     "'SARRH', 'SBRAD', 'SR', 'STACH', 'SVARR', 'SVTAC', 'TRIGU']"),
    ("vocabulary matches no record", vocab_matches_nothing, "form", "scp_statements.csv: field 'form': task 'form': the statements give none"),
    ("a superclass missing from the statements", no_hyp, INIT, "scp_statements.csv: field 'diagnostic_class': task 'superdiagnostic' "
     "has the fixed classes ['CD', 'HYP', 'MI', 'NORM', 'STTC']; this file lacks ['HYP'], so a 5-way head could not be trained or read from it"),
    ("a rhythm statement the task does not have", extra_rhythm, "rhythm", "scp_statements.csv: field 'rhythm': task 'rhythm' has the "
     "fixed classes ['AFIB', 'AFLT', 'BIGU', 'PACE', 'PSVT', 'SARRH', 'SBRAD', 'SR', 'STACH', 'SVARR', 'SVTAC', 'TRIGU']; this file adds ['WPW']"),
    ("a statement defined twice", dup_statement, INIT, "scp_statements.csv: field 'scp_code': 1 value(s) repeat"),
    ("every code unknown", all_unknown, INIT, "field 'scp_codes': ecg_id=1: unknown SCP code(s)"),
    ("ADC gain 0", gain0, ITEM, "00001_lr.hea: field 'adc_gain': ADC gain must be > 0"),
    ("ADC gain negative", gain_neg, ITEM, "00001_lr.hea: field 'adc_gain': ADC gain must be > 0"),
    ("units V", volts, ITEM, "00001_lr.hea: field 'units': expected mV or uV"),
    ("units mmHg", mmhg, ITEM, "00001_lr.hea: field 'units': expected mV or uV"),
    ("amplitude 21 mV", huge, ITEM, "00001_lr.dat: field 'signal': 12 samples beyond ±20 mV (first in lead I: 21.0 mV)"),
    ("a NaN lead", nan_lead, ITEM, "00001_lr.dat: field 'signal': 1000 NaN/Inf samples (first in lead III)"),
    ("a flipped bit in the samples", flipped, ITEM, "00001_lr.dat: field 'checksum'"),
    ("record at 500 Hz where 100 Hz is listed", rate, ITEM, "00001_lr.hea: field 'fs': expected 100 Hz, the header says 500 Hz"),
]


@pytest.mark.parametrize("case, breaker, when, message", CASES, ids=[c[0] for c in CASES])
def test_bad_ptbxl_input_is_refused_naming_file_and_field(base, tmp_path, case, breaker, when, message):
    r = copy(base, tmp_path)
    breaker(r, base)
    task = when if when not in (INIT, ITEM) else "rhythm" if breaker is no_rhythm_vocab else "superdiagnostic"
    if when == ITEM:
        ds = E.PTBXL(r, task)
        with pytest.raises(DataError, match=re.escape(message)): ds[0]
    else:
        with pytest.raises(DataError, match=re.escape(message)): E.PTBXL(r, task)


def test_skip_quarantines_both_copies_of_a_repeated_record_and_nothing_else(base, tmp_path):
    r = copy(base, tmp_path); dup_id(r, base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = E.PTBXL(r, "all", on_error="skip")
    # 12 records, one without statements, ecg_id 1 gone (both copies), and ecg_id 7 (the fixture's NaN lead) removed once read
    assert 1 not in set(ds.frame.ecg_id) and len(ds) == 9 and [r["ecg_id"] for r in ds.items] == [2, 3, 4, 5, 6, 8, 9, 10, 12]
    assert [(Path(q.path).name, q.field) for q in ds.quarantine] == [("ptbxl_database.csv", "ecg_id"), ("00007_lr.dat", "signal")]


def test_all_rows_bad_under_skip_is_an_error_not_an_empty_dataset(base, tmp_path):
    r = copy(base, tmp_path)
    edit_db(r, lambda df: df.assign(scp_codes="not a dict"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="ptbxl_database.csv: field 'rows': no readable record"): E.PTBXL(r, on_error="skip")


def test_irregular_but_valid_records_read_exactly(base, tmp_path):
    "Flat lead: kept and flat. Odd CSV row (quoted newline, empty field, fold '2.0'): its labels and signal are right."
    odd, truth = E.PTBXL_FIXTURE_IRREGULAR, base[1]
    ds = E.PTBXL(base[0], "all")
    at = {r["ecg_id"]: k for k, r in enumerate(ds.items)}
    x, _ = ds[at[odd["flat_lead"]]]
    assert torch.equal(x[E.STANDARD_LEADS.index("AVL")], torch.zeros(1000))
    row = pd.read_csv(base[0] / "ptbxl_database.csv").set_index("ecg_id").loc[odd["odd_row"]]
    assert "\n" in row.report and math.isnan(row.patient_id)
    x, y = ds[at[odd["odd_row"]]]
    assert ds.items[at[odd["odd_row"]]]["strat_fold"] == 2
    assert np.abs(x.numpy() - truth[(odd["odd_row"], 100)]).max() <= 0.5e-3 + 1e-6
    assert {ds.classes[j] for j in np.flatnonzero(y["all"].numpy())} == set(ast.literal_eval(row.scp_codes))


# --- seeded random corruption: either a DataError that names the file and a field, or exactly the right data ---
GARBAGE = ["", "abc", "-1", "{", "nan", "1.5", "../../x", "0"]
COLUMNS = ["ecg_id", "scp_codes", "strat_fold", "filename_lr"]


def corrupt(root: Path, rng) -> str:
    "Apply one random corruption to one random file of the fixture; say what was done."
    files = sorted(p for p in root.rglob("*") if p.is_file())
    f = files[rng.integers(len(files))]
    kind = rng.choice(["truncate", "delete", "cell", "bytes", "line"])
    if f.suffix == ".csv" and kind in ("cell", "bytes") and f.name == "ptbxl_database.csv":
        df = pd.read_csv(f, dtype=str)
        i, c = int(rng.integers(len(df))), str(rng.choice(COLUMNS))
        df.loc[i, c] = str(rng.choice(GARBAGE)); df.to_csv(f, index=False)
        return f"{f.name}: row {i} {c}"
    if kind == "delete": f.unlink(); return f"deleted {f.name}"
    data = f.read_bytes()
    if kind == "truncate": f.write_bytes(data[: int(rng.integers(len(data)))]); return f"truncated {f.name}"
    if kind == "line" and f.suffix in (".hea", ".csv"):
        lines = data.decode().splitlines(keepends=True)
        j = int(rng.integers(len(lines)))
        lines[j:j + 1] = [] if rng.random() < 0.5 else [lines[j], lines[j]]
        f.write_text("".join(lines)); return f"line {j} of {f.name} deleted or doubled"
    if f.suffix == ".dat":  # samples: flipped bits (a header's digits can change into other valid numbers: not drawn)
        d = bytearray(data)
        for k in rng.integers(0, len(d), 3): d[k] ^= int(rng.integers(1, 256))
        f.write_bytes(bytes(d)); return f"bytes of {f.name}"
    f.write_bytes(data[: len(data) // 2]); return f"halved {f.name}"


def test_random_corruption_is_never_silently_wrong(base, tmp_path):
    truth = base[1]
    root0 = Path(shutil.copytree(base[0], tmp_path / "valid"))        # every record valid: drop the NaN-lead one
    edit_db(root0, lambda df: df[df.ecg_id != E.PTBXL_FIXTURE_IRREGULAR["nan_lead"]])
    db0 = pd.read_csv(root0 / "ptbxl_database.csv").set_index("ecg_id")
    S = E._FIXTURE_STATEMENTS
    outcomes = {"refused": 0, "exact": 0}
    for seed in range(40):
        rng = np.random.default_rng(seed)
        r = Path(shutil.copytree(root0, tmp_path / f"c{seed}"))
        what = corrupt(r, rng)
        try:
            ds = E.PTBXL(r, "superdiagnostic")
            items = read_all(ds)
        except DataError as e:
            assert str(r) in e.file and e.field and e.reason, (what, str(e))
            outcomes["refused"] += 1
            continue
        for it, (x, y) in zip(ds.items, items):   # accepted: every record is the right record with the right labels
            eid = it["ecg_id"]
            assert eid in db0.index and it["strat_fold"] == int(float(db0.loc[eid, "strat_fold"])), what
            assert np.abs(x.numpy() - truth[(eid, 100)]).max() <= 0.5e-3 + 1e-6, what
            exp = {S[c][3] for c in ast.literal_eval(db0.loc[eid, "scp_codes"]) if S[c][0] == 1}
            assert {ds.classes[j] for j in np.flatnonzero(y["superdiagnostic"].numpy())} == exp, what
        outcomes["exact"] += 1
    assert outcomes["refused"] >= 10 and outcomes["exact"] >= 5, outcomes   # both outcomes occur: the property is exercised


# --- MIMIC-IV-ECG: the converter from the published layout, killed and resumed ---
@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    root = tmp_path_factory.mktemp("mimic") / "wfdb"
    return root, E.make_mimic_ecg_fixture(root, n_records=12, convert=False)


def run_cli(root, out, kill_after=None, chunk=2):
    "`python script.py ROOT --out OUT` calling ecg_npy as a script; with `kill_after`, it SIGKILLs itself reading that record."
    hook = "" if kill_after is None else (
        "import os, signal\nimport sslmed.domains.ecg as E\n_r, _n = E.read_wfdb, [0]\n"
        "def rw(*a, **k):\n    _n[0] += 1\n    if _n[0] == %d: os.kill(os.getpid(), signal.SIGKILL)\n    return _r(*a, **k)\n"
        "E.read_wfdb = rw\n" % kill_after)
    script = Path(out).with_name(Path(out).stem + "_cli.py")
    script.write_text(hook + "from sslmed.domains.ecg import ecg_npy\necg_npy()\n")  # a script's top level: fastcore parses argv
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(script), str(root), "--out", str(out), "--chunk", str(chunk), "--quiet"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_converter_killed_then_resumed_equals_an_uninterrupted_run(mimic, tmp_path):
    root, truth = mimic
    clean = tmp_path / "clean.npy"
    assert run_cli(root, clean).returncode == 0
    out = tmp_path / "resumed.npy"
    p = run_cli(root, out, kill_after=8)
    assert p.returncode == -signal.SIGKILL
    assert not out.exists()                                           # nothing half-written under the final name
    journal = tmp_path / ".resumed.npy.journal"
    done = len(journal.read_text().splitlines()) - 1
    assert 4 <= done <= 7, done                                       # chunks of 2 saved before the kill, the rest redone
    p = run_cli(root, out, kill_after=None)
    assert p.returncode == 0, p.stderr[-2000:]
    assert out.read_bytes() == clean.read_bytes()
    for suffix in (".records.csv", ".skipped.csv"):
        assert Path(str(out) + suffix).read_text().replace("resumed", "clean") == Path(str(clean) + suffix).read_text()
    assert not journal.exists() and not list(tmp_path.glob(".*part*"))
    rows = pd.read_csv(str(out) + ".records.csv")
    m = E.MIMICECG(out)
    assert len(m) == len(rows) == 11                                 # the NaN-lead record was skipped
    for k, rec in enumerate(rows.record):
        t = truth[str(Path(rec).relative_to(root))]
        assert np.abs(m[k][0].numpy() - t).max() <= 2 ** -11 * np.abs(t).max() + 1e-6
    skipped = pd.read_csv(str(out) + ".skipped.csv")
    assert skipped.field.tolist() == ["signal"] and "NaN" in skipped.reason[0]


def test_converter_resume_discards_a_journal_of_other_records(mimic, tmp_path):
    root, _ = mimic
    out = tmp_path / "x.npy"
    assert run_cli(root, out, kill_after=6).returncode == -signal.SIGKILL
    recs = pd.read_csv(root / "record_list.csv").path.map(lambda p: str(root / p)).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = E.write_ecg_npy(recs[:4], out, on_error="skip")       # other records: starts afresh, converts these
    kept = [r for k, r in enumerate(recs[:4]) if k != E.MIMIC_FIXTURE_IRREGULAR["nan_lead"]]
    assert index.record.tolist() == kept and E.MIMICECG(out).array.shape == (3, 12, 5000)


def mimic_case(tmp_path, mimic, edit):
    root = Path(shutil.copytree(mimic[0], tmp_path / "m"))
    edit(root)
    return root


def test_converter_bad_input(mimic, tmp_path):
    "record_list paths outside the root or repeated, a gain of 0 (quarantined), a folder without the array."
    lst = lambda r: r / "record_list.csv"
    r = mimic_case(tmp_path / "a", mimic, lambda r: pd.read_csv(lst(r)).assign(
        path=lambda d: d.path.where(d.index != 3, "../../etc/x")).to_csv(lst(r), index=False))
    with pytest.raises(DataError, match=re.escape("record_list.csv: field 'path': path '../../etc/x' resolves outside")):
        E.ecg_npy(str(r), quiet=True)
    r = mimic_case(tmp_path / "b", mimic, lambda r: pd.concat([pd.read_csv(lst(r))] * 2).to_csv(lst(r), index=False))
    with pytest.raises(DataError, match="record_list.csv: field 'path': 12 value"): E.ecg_npy(str(r), quiet=True)
    def gain0(r):
        h = r / (pd.read_csv(lst(r)).path[5] + ".hea")
        h.write_text(re.sub(r" 200\.0\(0\)/mV", " 0(0)/mV", h.read_text(), count=1))
    r = mimic_case(tmp_path / "c", mimic, gain0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        E.ecg_npy(str(r), quiet=True)
    sk = pd.read_csv(r / "mimic_iv_ecg.npy.skipped.csv")
    assert sorted(sk.field) == ["adc_gain", "signal"] and len(E.MIMICECG(r)) == 10
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="field 'file': the folder holds no .npy file"): E.MIMICECG(tmp_path / "empty")


# --- the full recipe: labels, rates, masks, seed parity ---
def test_full_recipe_reads_fixtures_at_its_rate_with_the_domains_labels(tmp_path, monkeypatch):
    from sslmed.protocols import eval_datasets
    dom = get_domain("ecg")
    for name, writer in dom.fixtures.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            writer(tmp_path / name, seed=0)
        monkeypatch.setenv(f"SSLMED_DATA_{name.upper()}", str(tmp_path / name))
    cfg = recipe("ecg", "sigreg_jepa", "full")
    assert cfg.data["fs"] == cfg.views["fs"] and cfg.views["crop"] == 10 * cfg.data["fs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, test = eval_datasets("ecg", "full", root=ROOT)
        x, y = train[0]
    assert x.shape == (12, cfg.views["crop"]) and set(y) == set(dom.tasks) == set(E.ECG_REAL_TASKS["ptbxl"])
    assert y["superclass"].shape == (E.ECG_REAL_TASKS["ptbxl"]["superclass"].n_classes,)
    assert set(train.frame.strat_fold) <= set(range(1, 9)) and set(test.frame.strat_fold) == {10}
    for m in ("supervised", "triplet"):                                # labels in pretraining: PTB-XL's training folds
        c = recipe("ecg", m, "full")
        assert c.dataset == "ptbxl" and c.data["split"] == "train" and c.data["labels"] == {dom.label_key: "superdiagnostic"}
    from sslmed.train import build_dataset
    c = recipe("ecg", "triplet", "full", [f"data_root={tmp_path / 'ptbxl'}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = build_dataset(c)[0]
    assert x.shape == (12, 5000) and dom.label_key in y


def test_full_recipe_masks_cover_75_to_85_percent_and_smoke_masks_are_unchanged():
    from sslmed.methods import sample_block_mask
    from sslmed.encoders import create_encoder
    cfg = recipe("ecg", "sigreg_jepa", "full")
    grid = create_encoder(cfg.encoder, 12, **cfg.encoder_kw).grid_size((1, 12, cfg.views["crop"]))
    g, frac = torch.Generator().manual_seed(0), []
    for _ in range(10):
        m = sample_block_mask(grid, 100, g, **cfg.method_kw["mask"])
        frac += [m.target.shape[1] / math.prod(grid)] * 100
        assert m.context.shape[1] + m.target.shape[1] == math.prod(grid)
    assert len(frac) == 1000 and 0.75 <= min(frac) and max(frac) <= 0.85
    assert recipe("ecg", "ema_jepa", "full").method_kw["mask"] == cfg.method_kw["mask"]
    smoke = yaml.safe_load((ROOT / "recipes/smoke/ecg.yaml").read_text())["methods"]["sigreg_jepa"]["method_kw"]["mask"]
    assert smoke == {"context_ratio": [0.15, 0.25], "n_targets": 4, "target_scale": [0.1, 0.15]}


SEED_001 = {"dim": 384, "depth": 8, "num_heads": 6, "pred_dim": 192, "pred_depth": 8, "sigreg_lambda": 0.02,
            "min_keep_ratio": 0.15, "max_keep_ratio": 0.25}


def test_full_recipe_is_seed_001_by_default():
    over = seed_overrides(SEED_001, get_domain("ecg").seed_keys, "seed 001 ViTS_mimic.yaml")
    assert len(over) == len(SEED_001)
    assert recipe("ecg", "sigreg_jepa", "full", over) == recipe("ecg", "sigreg_jepa", "full")
    changed = recipe("ecg", "sigreg_jepa", "full", seed_overrides({**SEED_001, "sigreg_lambda": 0.05}, get_domain("ecg").seed_keys))
    assert changed.method_kw["lamb"] == 0.05


def parity_rows():
    text = (ROOT / "data_cards/mimic_iv_ecg.md").read_text()
    table = text.split("## Parity with seed 001")[1].split("\n## ")[0]
    rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in table.splitlines() if l.startswith("| ")]
    return rows[1:]


def dotted(cfg, key):
    node = {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}
    for k in key.split("."): node = node[k]
    return node


def finetune_names() -> set:
    "What `finetune_task` logs, with `<class>` for a class name: the trainer's tags of loss and lr, and the seed's AUC names."
    from sslmed.finetune import logged_names
    from sslmed.runs import tb_tags
    m = {"auroc": 0.5, "auroc/<class>": 0.5}
    return {tb_tags(k)[0] for k in ("loss", "lr", *logged_names(m, "val"), "val/best_auc", *logged_names(m, "test"))}

FINETUNE_NAMES = finetune_names()


def test_parity_table_matches_the_full_recipe():
    rows = parity_rows()
    assert len(rows) >= 25
    cfg, checked = recipe("ecg", "sigreg_jepa", "full"), 0
    for seed, seed_val, ours, our_val, same, why in rows:
        assert same in ("same", "different", "not measured"), same
        if same == "different": assert why, f"{seed}: a difference needs its reason"
        if m := re.fullmatch(r"`([\w.]+)`", ours):
            value = yaml.safe_load(our_val)
            assert dotted(cfg, m.group(1)) == value, (seed, m.group(1), dotted(cfg, m.group(1)), value)
            if same == "same": assert yaml.safe_load(seed_val) == value, seed
            checked += 1
        elif ours.startswith("TB `"):
            assert ours[4:-1] in TB_NAMES.values(), ours
            if same == "same": assert seed.removeprefix("metric ").strip("`") == ours[4:-1]
            checked += 1
        elif ours.startswith("finetune TB `"):                          # the names fine-tuning writes (TB, CSV)
            names = re.findall(r"`([^`]+)`", ours)
            assert names and set(names) <= FINETUNE_NAMES, (names, FINETUNE_NAMES)
            if same == "same" and seed.startswith("finetune metric"): assert re.findall(r"`([^`]+)`", seed) == names
            checked += 1
    keys = {re.fullmatch(r"`([\w.]+)`", r[2]).group(1) for r in rows if re.fullmatch(r"`([\w.]+)`", r[2])}
    translated = {o.split("=", 1)[0] for o in seed_overrides(SEED_001, get_domain("ecg").seed_keys)}
    assert translated <= keys and len(translated) == 8                  # every translated seed key has its row
    assert checked >= 30, checked


def test_domain_tasks_have_the_fixed_vocabularies():
    "The reader's fixed class lists are the sizes of the heads the domain declares for PTB-XL (and MIMIC, evaluated on it)."
    for ds in ("ptbxl", "mimic_ecg"):
        tasks = E.ECG_REAL_TASKS[ds]
        assert {k: tasks[k].n_classes for k in E.PTBXL_LABELS} == {k: len(E.PTBXL_VOCABULARY[t]) for k, t in E.PTBXL_LABELS.items()}


def test_vocabulary_missing_in_the_file_is_refused_by_check_data(base, tmp_path, monkeypatch):
    "check-data opens PTB-XL as the full recipe does, before any training: the row names the file's field and missing label."
    from sslmed.protocols import check_data, profile_datasets
    r = copy(base, tmp_path); no_hyp(r, base)
    monkeypatch.setenv("SSLMED_DATA_PTBXL", str(r))
    summary, bad = check_data("full", tmp_path / "q.csv")
    rows = summary[summary.dataset == "ptbxl"]
    assert len(rows) >= 1 and all(rows.error.str.startswith("diagnostic_class: task 'superdiagnostic' has the fixed classes "
                                                             "['CD', 'HYP', 'MI', 'NORM', 'STTC']; this file lacks ['HYP']"))
    hit = bad[bad.dataset == "ptbxl"]
    assert set(hit.path) == {str(r / "scp_statements.csv")} and set(hit.field) == {"diagnostic_class"}


def test_mimic_npy_gets_the_wfdb_paths_physical_range(base, tmp_path):
    "One range per signal: a 25 mV sample is refused by the WFDB reader and by the .npy reader with the same reason."
    sig = base[1][(2, 100)].copy(); sig[8, 300] = 25.0
    r = copy(base, tmp_path); E._write_wfdb(r / E100.format(2), sig, 100, E.STANDARD_LEADS)
    with pytest.raises(DataError) as wf: E.read_wfdb(r / E100.format(2), 100, 1000)
    a = np.zeros((3, 12, 5000), np.float16); a[1, :, :1000] = sig; a[2, 4, 10] = 60000.0
    np.save(tmp_path / "m.npy", a)
    ds = E.MIMICECG(tmp_path / "m.npy")
    with pytest.raises(DataError) as npy: ds[1]
    assert (npy.value.file, npy.value.field) == (str(tmp_path / "m.npy"), "signal[1]") and npy.value.reason == wf.value.reason
    assert wf.value.reason == "1 samples beyond ±20 mV (first in lead V3: 25.0 mV): saturated, mis-scaled or corrupt"
    with pytest.raises(DataError, match=r"m.npy: field 'signal\[2\]': 1 samples beyond ±20 mV \(first in lead AVL: 60000.0 mV\)"): ds[2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        skip = E.MIMICECG(tmp_path / "m.npy", on_error="skip")
    assert len(skip) == 1 and skip.items.tolist() == [0] and [q.field for q in skip.quarantine] == ["signal[1]", "signal[2]"]
