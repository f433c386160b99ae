"""Fundus real-data path: the bad-input corpus of the three readers (each case asserts its outcome), a seeded random-corruption
property test over the fixture files, the photo cache, a short training run on the fixtures, and the parity table of
data_cards/aptos2019.md against recipes/full/fundus.yaml."""
import dataclasses, os, re, shutil, warnings, importlib
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch, yaml
from PIL import Image
from sslmed.core import project_root
from sslmed.data.core import DataError, Quarantine
from sslmed.domain import get_domain, seed_overrides
from sslmed.domains.fundus import (APTOS, EyePACS, Messidor2, make_aptos_fixture, make_eyepacs_fixture, make_messidor2_fixture,
                                   SEED_KEYS, epochs_to_steps, PhotoCache)
from sslmed.config import recipe

ROOT = project_root(Path(__file__).parent)

@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    t = tmp_path_factory.mktemp("fundus")
    out = {"aptos": make_aptos_fixture(t / "aptos", n=20), "eyepacs": make_eyepacs_fixture(t / "eyepacs", n=6),
           "messidor2": make_messidor2_fixture(t / "messidor2", n=10),
           "aptos_folders": make_aptos_fixture(t / "aptos_folders", n=20, layout="folders")}
    return t, out

def clone(fixtures, tmp_path, name) -> Path:
    return Path(shutil.copytree(fixtures[0] / name, tmp_path / name))

def edit_csv(path, fn):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)

def first_png(r) -> str: return sorted(p.stem for p in (r / "train_images").glob("*.png"))[0]

def set_row(col, ident, value, id_col="id_code"):
    def fn(df):
        df.loc[df[id_col] == ident, col] = value
        return df
    return fn

# --- the bad-input corpus: (case, reader, corruption, expected message parts); each must raise DataError with all parts ----
def _dup(r):        edit_csv(r / "train.csv", lambda df: pd.concat([df, df.iloc[:1]]))
def _grade7(r):     edit_csv(r / "train.csv", set_row("diagnosis", first_png(r), "7"))
def _grade_frac(r): edit_csv(r / "train.csv", set_row("diagnosis", first_png(r), "2.5"))
def _grade_word(r): edit_csv(r / "train.csv", set_row("diagnosis", first_png(r), "moderate"))
def _escape(r):     edit_csv(r / "train.csv", set_row("id_code", first_png(r), "../../outside"))
def _empty_id(r):   edit_csv(r / "train.csv", set_row("id_code", first_png(r), ""))
def _missing(r):    (r / "train_images" / f"{first_png(r)}.png").unlink()
def _ambiguous(r):  shutil.copy(r / "train_images" / f"{first_png(r)}.png", r / "train_images" / f"{first_png(r)}.jpeg")
def _columns(r):    edit_csv(r / "train.csv", lambda df: df.rename(columns={"id_code": "image", "diagnosis": "level"}))
def _header_only(r): edit_csv(r / "train.csv", lambda df: df.iloc[:0])
def _both_layouts(r): (r / "train" / "0").mkdir(parents=True)
def _folder_vocab(r): (r / "train" / "1").rename(r / "train" / "mild")
def _folder_five(r):  (r / "train" / "5").mkdir()
def _folder_leak(r):
    p = next((r / "train" / "0").glob("*.png")); shutil.copy(p, r / "test" / "3" / p.name)
def _eyepacs_dup(r):    edit_csv(r / "trainLabels.csv", lambda df: pd.concat([df, df.iloc[2:3]]))
def _eyepacs_escape(r): edit_csv(r / "trainLabels.csv", set_row("image", "11_left", "../test/1_left", "image"))
def _messidor_ambig(r):
    (r / "IMAGES" / "sub").mkdir(); shutil.copy(r / "IMAGES" / "IM000001.JPG", r / "IMAGES" / "sub" / "im000001.jpg")
def _messidor_gradable(r): edit_csv(r / "messidor_data.csv", set_row("adjudicated_gradable", "IM000001.jpg", "yes", "image_id"))

CASES = [
    ("duplicated id_code", "aptos", APTOS, _dup, {}, ["train.csv", "field 'id_code'", "repeat"]),
    ("grade outside 0-4", "aptos", APTOS, _grade7, {}, ["train.csv", "field 'diagnosis'", "label 7 outside the integers 0..4"]),
    ("non-integer grade", "aptos", APTOS, _grade_frac, {}, ["field 'diagnosis'", "label 2.5 outside the integers"]),
    ("grade word (vocabulary)", "aptos", APTOS, _grade_word, {}, ["field 'diagnosis'", "'moderate' is not a number"]),
    ("id_code outside the root", "aptos", APTOS, _escape, {}, ["train.csv", "field 'id_code'", "resolves outside"]),
    ("empty id_code", "aptos", APTOS, _empty_id, {}, ["train.csv", "field 'id_code'", "empty or missing id"]),
    ("missing image", "aptos", APTOS, _missing, {}, ["field 'id_code'", "file not found"]),
    ("same id as .png and .jpeg", "aptos", APTOS, _ambiguous, {}, ["train.csv", "field 'id_code'", "ambiguous: 2 files match"]),
    ("another dataset's columns", "aptos", APTOS, _columns, {}, ["train.csv", "field 'id_code'", "missing column"]),
    ("labels file with no rows", "aptos", APTOS, _header_only, {}, ["field 'items'", "no labelled images found"]),
    ("both layouts present", "aptos", APTOS, _both_layouts, {}, ["field 'layout'", "both train.csv and train/<grade>/"]),
    ("grade folder named by word", "aptos_folders", APTOS, _folder_vocab, {}, ["mild: field 'grade folder'", "not a grade 0-4"]),
    ("grade folder 5", "aptos_folders", APTOS, _folder_five, {}, ["5: field 'grade folder'"]),
    ("image in train/ and test/", "aptos_folders", APTOS, _folder_leak, {}, ["field 'image'", "repeat"]),
    ("EyePACS duplicated image", "eyepacs", EyePACS, _eyepacs_dup, {}, ["trainLabels.csv", "field 'image'", "repeat"]),
    ("EyePACS image outside its folder", "eyepacs", EyePACS, _eyepacs_escape, {}, ["trainLabels.csv", "field 'image'", "resolves outside"]),
    ("Messidor-2 id matching two files", "messidor2", Messidor2, _messidor_ambig, {}, ["messidor_data.csv", "field 'image_id'", "ambiguous"]),
    ("Messidor-2 gradable not 0/1", "messidor2", Messidor2, _messidor_gradable, {}, ["field 'adjudicated_gradable'", "'yes' is not a number"]),
]

@pytest.mark.parametrize("case,src,cls,corrupt,kw,parts", CASES, ids=[c[0] for c in CASES])
def test_bad_input(fixtures, tmp_path, case, src, cls, corrupt, kw, parts):
    r = clone(fixtures, tmp_path, src)
    cls(r, "all") if cls is APTOS else cls(r)  # the clean copy reads
    corrupt(r)
    with pytest.raises(DataError) as e:
        ds = cls(r, "all", **kw) if cls is APTOS else cls(r, **kw)
        [ds[k] for k in range(len(ds))]
    for part in parts: assert part in str(e.value), (case, str(e.value))

def test_corrupt_jpeg_is_quarantined(fixtures, tmp_path):
    "The fixture's truncated JPEG: a DataError when read, one quarantine entry (and CSV row) with on_error='skip'; the rest batch."
    log = tmp_path / "q.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = APTOS(fixtures[0] / "aptos", "all", size=48, on_error="skip", quarantine_log=log)
        xs = torch.stack([ds[k][0] for k in range(len(ds))])
    assert xs.shape == (19, 3, 48, 48) and torch.isfinite(xs).all()   # 20 listed, the truncated JPEG removed
    assert len({x.numpy().tobytes() for x in xs}) == 19                # no image twice (no neighbour stands in)
    bad = [Path(r.path).name for r in ds.quarantine]
    assert len(bad) == 1 and bad[0].endswith(".jpeg") and [r.field for r in ds.quarantine] == ["image"]
    assert pd.read_csv(log).path.map(lambda p: Path(p).name).tolist() == bad
    strict = APTOS(fixtures[0] / "aptos", "all", size=48)
    k = next(i for i, it in enumerate(strict.items) if it["path"].name == bad[0])
    with pytest.raises(DataError, match="field 'image': cannot decode"): strict[k]

def test_blank_frame(fixtures, tmp_path):
    r = clone(fixtures, tmp_path, "aptos")
    p = r / "train_images" / f"{first_png(r)}.png"
    Image.new("RGB", (300, 200)).save(p)
    ds = APTOS(r, "all", size=32)
    k = next(i for i, it in enumerate(ds.items) if it["path"] == p.resolve() or it["path"] == p)
    with pytest.raises(DataError, match="field 'image': no field of view"): ds[k]

CORRUPTIONS = ("truncate", "flip", "empty", "noise", "black")

def corrupt_file(p: Path, how: str, rng):
    b = p.read_bytes()
    if how == "truncate": p.write_bytes(b[:int(rng.integers(1, len(b)))])
    elif how == "flip":
        a = bytearray(b)
        for i in rng.integers(len(a) // 4, len(a), 8): a[i] ^= int(rng.integers(1, 256))
        p.write_bytes(bytes(a))
    elif how == "empty": p.write_bytes(b"")
    elif how == "noise": p.write_bytes(rng.integers(0, 256, int(rng.integers(10, 4000)), dtype=np.uint8).tobytes())
    else: Image.new("RGB", (200, 150)).save(p, format="JPEG" if p.suffix.lower() in (".jpg", ".jpeg") else "PNG")

@pytest.mark.parametrize("seed", range(6))
def test_random_corruption_property(fixtures, tmp_path, seed):
    "Any corruption of any fixture files: every item is the right shape and range, or a DataError naming a corrupted file."
    rng = np.random.default_rng(seed)
    name, cls = [("aptos", APTOS), ("eyepacs", EyePACS), ("messidor2", Messidor2)][seed % 3]
    r = clone(fixtures, tmp_path, name)
    ds0 = cls(r, "all") if cls is APTOS else cls(r)
    paths = [it["path"] for it in ds0.items]
    hit = {Path(p).resolve() for p in rng.choice(paths, 3, replace=False)}
    for p in hit: corrupt_file(p, CORRUPTIONS[int(rng.integers(len(CORRUPTIONS)))], rng)
    hit |= {Path(p).resolve() for p in paths if Path(p).suffix == ".jpeg" or Path(p).stem in ("IM000005", "10_right")}  # the fixture's own
    ds = cls(r, "all", size=32) if cls is APTOS else cls(r, size=32)
    ok = 0
    for k in range(len(ds)):
        try: x, y = ds[k]
        except DataError as e:
            assert Path(e.file).resolve() in hit and e.field == "image", str(e)
            continue
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert 0 <= y["grade"] <= 4
        ok += 1
    assert ok >= len(ds) - len(hit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        skip = cls(r, "all", size=32, on_error="skip") if cls is APTOS else cls(r, size=32, on_error="skip")
        _ = [skip[k] for k in range(len(skip))]
    assert {Path(q.path).resolve() for q in skip.quarantine} <= hit

def test_cache_recomputes_changed_file(fixtures, tmp_path):
    r = clone(fixtures, tmp_path, "eyepacs")
    kw = dict(size=40, cache_dir=tmp_path / "cache")
    ds = EyePACS(r, **kw)
    x0 = ds[0][0]
    assert ds.cache.misses == 1 and torch.equal(EyePACS(r, **kw)[0][0], x0)
    p, st = ds.items[0]["path"], ds.items[0]["path"].stat()
    arr = np.asarray(Image.open(p)).copy(); arr[arr.shape[0] // 3:arr.shape[0] // 2] = 0
    Image.fromarray(arr).save(p, format="JPEG", quality=90); os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    fresh = EyePACS(r, **kw)
    x1 = fresh[0][0]
    assert fresh.cache.misses == 1 and fresh.cache.hits == 0 and not torch.equal(x1, x0)
    assert torch.equal(x1, EyePACS(r, size=40)[0][0])  # the recomputed value is the uncached one

def test_fixtures_registered_and_train(fixtures, tmp_path):
    "The registered writers write readable datasets; the full recipe's data path trains 2 steps on them (small model)."
    dom = get_domain("fundus")
    for name, write in dom.fixtures.items():
        write(tmp_path / name, seed=1)
        ds = dom.datasets[name](root=tmp_path / name, size=32, on_error="skip")
        assert len(ds) > 0
    from sslmed.train import fit
    cfg = recipe("fundus", "vicreg", "full", [f"data_root={tmp_path / 'eyepacs'}", "batch_size=2", "accum_steps=2", "steps=2",
                                             "warmup_steps=1", "encoder=resnet18", "views.size=32", "views.local_size=16",
                                             "views.clahe=false", "data.size=48", f"data.cache_dir={tmp_path / 'cache'}",
                                             f"data.quarantine_log={tmp_path / 'q.csv'}", "method_kw.expander=64",
                                             "precision=fp32", "num_workers=0", "device=cpu", "progress=false",
                                             f"out_dir={tmp_path / 'run'}", "ckpt_every=2", "keep_every=null"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(cfg)
    assert (tmp_path / "run" / "backbone.pt").is_file()

# --- parity ---------------------------------------------------------------------------------------------------------------
def parity_rows() -> list[list[str]]:
    text = (ROOT / "data_cards" / "aptos2019.md").read_text()
    table = next(c for c in text[text.index("## Parity with seed 002"):].split("\n\n") if c.startswith("| seed 002"))
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()]
    assert rows[0][:3] == ["seed 002 setting / feature / metric / layout", "sslmed key or function", "same / different"]
    return rows[2:]

def _dotted(d: dict, key: str):
    for part in key.split("."): d = d[part]
    return d

def test_parity_table_matches_recipe():
    rows = parity_rows()
    assert len(rows) >= 25
    checked = 0
    for seed_cell, cell, verdict, why in rows:
        assert verdict.startswith(("same", "different", "similar")), verdict
        assert "pending" not in verdict and why, f"row {seed_cell!r}: every row is settled, with a reason"
        spans = re.findall(r"`([^`]+)`", cell)
        assert spans, f"row {seed_cell!r} names no sslmed key or function"
        for s in spans:
            if m := re.fullmatch(r"(\w+)\.([\w.]+) = (.+)", s):
                cfg = dataclasses.asdict(recipe("fundus", m[1], "full"))
                assert _dotted(cfg, m[2]) == yaml.safe_load(m[3]), (s, _dotted(cfg, m[2]))
            else:
                assert re.fullmatch(r"sslmed(\.\w+)+", s), f"unparsable span {s!r}"
                mod, name = s.rsplit(".", 1)
                assert hasattr(importlib.import_module(mod), name), s
            checked += 1
    assert checked >= 40
    named = " ".join(r[0] for r in rows)
    for k in SEED_KEYS: assert k in named, f"seed constant {k} has no parity row"

def test_seed_constants_reproduce_recipe():
    seed = {"BATCH_SIZE": 256, "TOTAL_DS_EPOCHS": 200, "LR": 0.003, "WEIGHT_DECAY": 1e-4, "EMBEDDING_DIM": 8192, "NUM_CLASSES": 5}
    base, from_seed = recipe("fundus", "vicreg", "full"), recipe("fundus", "vicreg", "full", seed_overrides(seed, SEED_KEYS))
    assert dataclasses.asdict(base) == dataclasses.asdict(from_seed)
    assert base.steps == epochs_to_steps(200) and base.warmup_steps == epochs_to_steps(10)
    assert base.batch_size * base.accum_steps == 2048
    half = recipe("fundus", "vicreg", "full", seed_overrides({"TOTAL_DS_EPOCHS": 100, "LR": 0.01}, SEED_KEYS))
    assert (half.steps, half.lr) == (epochs_to_steps(100), 0.01)

def test_recipes_load_and_eval_data_is_deterministic():
    "Every method of the full recipe loads; the data the probes read (the `random` entry) has no random crop."
    y = yaml.safe_load((ROOT / "recipes" / "full" / "fundus.yaml").read_text())
    for m in y["methods"]: recipe("fundus", m, "full")
    assert not recipe("fundus", "random", "full").data.get("random_crop")
    assert all(recipe("fundus", m, "full").data.get("random_crop") for m in y["methods"] if m != "random")


def test_empty_split_names_the_split_its_size_and_why(fixtures, tmp_path):
    "Ten images, two per grade: 20 % of two rounds to none in every grade, so APTOS's test split is empty, and says so."
    r = clone(fixtures, tmp_path, "aptos")
    edit_csv(r / "train.csv", lambda df: df.groupby("diagnosis").head(2))
    with pytest.raises(DataError) as e: APTOS(r, "test")
    assert e.value.file == str(r / "train.csv") and e.value.field == "split"
    assert e.value.reason == ("split 'test' is empty (0 of 10 graded images): the stratified split (val_frac=0.1, test_frac=0.2, "
                              "per grade) gives it none of any grade; images per grade {0: 2, 1: 2, 2: 2, 3: 2, 4: 2}. "
                              "Use more images, larger fractions, or split='all'")
    assert len(APTOS(r, "train")) + len(APTOS(r, "val")) == len(APTOS(r, "all")) == 10   # the other splits read as before
    f = clone(fixtures, tmp_path, "aptos_folders")
    for p in (f / "test").rglob("*.*"): p.unlink()
    with pytest.raises(DataError, match=r"aptos_folders/test: field 'split': split 'test' is empty: test/0…4 hold no image"): APTOS(f, "test")


def test_pair_sampler_reads_eyepacs_grades_without_decoding(tmp_path):
    "The pair sampler's class ids come from EyePACS' label table: a reader whose decoding raises is never decoded."
    from pathlib import Path
    from sslmed.domains.fundus import EyePACS, make_eyepacs_fixture
    from sslmed.samplers import pair_labels
    grades = make_eyepacs_fixture(tmp_path / "eyepacs", n=10, seed=0)
    ds = EyePACS(tmp_path / "eyepacs", split="train")
    ds.photo = lambda path: (_ for _ in ()).throw(RuntimeError(f"decoded {path}"))
    assert pair_labels(ds, "grade").tolist() == [grades[("train", Path(it["path"]).stem)] for it in ds.items]
