"Neuro real-data path: bad input (each case asserts its outcome), a seeded corruption property, the full recipe's parity with seed 004."
import json, os, re, shutil, warnings
from pathlib import Path
import numpy as np, pandas as pd, pydicom, nibabel as nib, pytest, torch, yaml
from sslmed.data.core import DataError, DataWarning, Quarantine
from sslmed.domain import Derived, Fixed, Ignored, flatten_keys, get_domain, seed_overrides
from sslmed.config import recipe
from sslmed.domains.neuro import (NeuroStudies, NEURO_SEED_KEYS, NEURO_CLASSIFY_KEYS, head_phantom, write_dicom_series, write_nifti,
                                  write_neuro_fixture, read_dicom_series, neuro_seed_overrides)

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(spacing=(6, 6, 6), max_crop_size=(4, 4, 4), patch_size=8)
TINY = dict(spacing=(1, 0.5, 0.5), max_crop_size=(2, 4, 4), patch_size=8)

@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("neuro") / "studies"
    write_neuro_fixture(root, seed=0)
    return root

def one_study(tmp_path, build) -> Path:
    "A root with one study, `bad`, built by `build(folder)`."
    build(tmp_path / "r" / "bad")
    return tmp_path / "r"

def edit_slice(folder: Path, k: int, **fields) -> Path:
    "Set header fields of the k-th slice file (sorted by name) of a DICOM folder."
    f = sorted(folder.glob("*.dcm"))[k]
    ds = pydicom.dcmread(f)
    for key, v in fields.items(): setattr(ds, key, v)
    ds.save_as(f)
    return f

def raises(f, *parts):
    with pytest.raises(DataError) as e: f()
    for p in parts: assert p in str(e.value), f"{p!r} not in {e.value}"
    return e.value

# --- bad input: each case asserts its outcome ---------------------------------------------------------------------

def test_missing_slice_is_interpolated_onto_the_grid(tmp_path):
    hu = head_phantom((6, 16, 14))
    fs = write_dicom_series(tmp_path / "CT", hu, spacing=(2.0, 0.5, 0.5))
    fs[2].unlink()                                            # the 3rd of 6 slices 2 mm apart
    with pytest.warns(DataWarning, match="IM.*field 'ImagePositionPatient': uneven slice positions, largest gap of 4 mm"):
        vol, sp, _ = read_dicom_series(sorted((tmp_path / "CT").iterdir()))
    assert vol.shape == (6, 16, 14) and sp[0] == 2.0
    np.testing.assert_array_equal(vol[[0, 1, 3, 4, 5]], hu[[0, 1, 3, 4, 5]])
    np.testing.assert_allclose(vol[2], (hu[1] + hu[3]) / 2)

def test_duplicate_slice_with_other_pixels_is_refused(tmp_path):
    fs = write_dicom_series(tmp_path / "CT", head_phantom())
    ds = pydicom.dcmread(fs[3]); ds.PixelData = (ds.pixel_array // 2).astype("<i2").tobytes(); ds.save_as(tmp_path / "CT" / "dup.dcm")
    raises(lambda: read_dicom_series(sorted((tmp_path / "CT").iterdir())), "field 'ImagePositionPatient': same position as", "different pixels")

@pytest.mark.parametrize("field, value, reason", [
    ("PixelSpacing", [0.0, 0.5], "must be in (0, 20.0]"), ("PixelSpacing", [0.5, 250.0], "must be in (0, 20.0]"),
    ("PixelSpacing", [-0.5, 0.5], "must be in (0, 20.0]"), ("RescaleSlope", 0, "is 0"),
    ("RescaleSlope", "NaN", "not finite"), ("RescaleIntercept", "inf", "not finite"),
    ("ImagePositionPatient", [0.0, "NaN", 4.0], "not finite"), ("ImageOrientationPatient", [1, 0, 0, 1, 0, 0], "orthogonal unit"),
    ("ImageOrientationPatient", [2, 0, 0, 0, 1, 0], "orthogonal unit")])
def test_impossible_dicom_header_is_refused(tmp_path, field, value, reason):
    write_dicom_series(tmp_path / "CT", head_phantom())
    f = edit_slice(tmp_path / "CT", 2, **{field: value})
    raises(lambda: read_dicom_series(sorted((tmp_path / "CT").iterdir())), f"{f}: field '{field}'", reason)

def test_absurd_slice_spacing_is_refused(tmp_path):
    write_dicom_series(tmp_path / "CT", head_phantom(), spacing=(40.0, 0.5, 0.5))
    raises(lambda: read_dicom_series(sorted((tmp_path / "CT").iterdir())), "field 'ImagePositionPatient': slice spacing 40 mm")

@pytest.mark.parametrize("affine, reason", [(np.full((4, 4), np.nan), "not a finite"), (np.diag([0.0, 1, 1, 1]), "must be in"),
                                            (np.array([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "singular")])
def test_broken_nifti_affine_is_refused(tmp_path, affine, reason):
    img = nib.Nifti1Image(np.zeros((8, 8, 8), np.float32) - 1000, np.eye(4))
    img.set_sform(np.eye(4), code=1); img.set_qform(None, code=0)
    d = tmp_path / "r" / "bad"; d.mkdir(parents=True); nib.save(img, d / "v.nii")
    b = bytearray((d / "v.nii").read_bytes())
    b[280:328] = np.asarray(affine[:3], "<f4").tobytes()      # srow_x, srow_y, srow_z: nibabel refuses to write these
    (d / "v.nii").write_bytes(bytes(b))
    raises(lambda: NeuroStudies(tmp_path / "r", **TINY)[0], "v.nii: field 'affine'", reason)

def test_labels_matching_no_folder_is_an_error_not_an_empty_dataset(fixture_root, tmp_path):
    f = tmp_path / "labels.csv"
    pd.DataFrame({"study_id": ["p1", "p2"], "haemorrhage": [0, 1]}).to_csv(f, index=False)
    for on_error in ("raise", "skip"):
        raises(lambda: NeuroStudies(fixture_root, labels_csv=f, on_error=on_error, **SMALL), f"{f}: field 'study_id': none of its 2 study ids")

def test_paths_outside_the_root_are_refused(fixture_root, tmp_path):
    root = tmp_path / "r"; shutil.copytree(fixture_root / "mr_nifti", root / "mr_nifti")
    (root / "mr_nifti" / "evil.nii.gz").symlink_to(fixture_root / "ct_axial" / "ct_BoneWindow.nii.gz")
    raises(lambda: NeuroStudies(root, **SMALL), "evil.nii.gz: field 'path'", "resolves outside the dataset root")
    raises(lambda: NeuroStudies(fixture_root, labels_csv="../labels.csv", **SMALL), "field 'labels_csv'", "outside the dataset root")

def test_changed_source_is_recomputed_not_served_stale(fixture_root, tmp_path):
    root = tmp_path / "r"; shutil.copytree(fixture_root / "ct_axial", root / "ct_axial")
    ds = NeuroStudies(root, cache_dir=tmp_path / "cache", **SMALL)
    before = ds[1][0].clone()
    src = ds.items[1]["files"][0]; st = src.stat()
    v, _ = nib.load(src).get_fdata(dtype=np.float32), None
    img = nib.load(src); nib.save(nib.Nifti1Image(np.where(img.get_fdata() > 500, 100.0, img.get_fdata()).astype(np.float32), img.affine), src)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))       # same mtime: a (size, mtime) key would serve the old volume
    after = NeuroStudies(root, cache_dir=tmp_path / "cache", **SMALL)[1][0]
    assert before.max() > 1000 and after.max() < 1000
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2        # the old entry and the recomputed one

def test_windowed_export_is_not_taken_for_hu(tmp_path):
    r = one_study(tmp_path, lambda d: write_dicom_series(d / "CT_brain", np.clip(head_phantom(), 0, 80) * 255 / 80, intercept=0.0))
    raises(lambda: NeuroStudies(r, **TINY)[0], "CT_brain: field 'voxels': CT values range 0..255", "not Hounsfield units")

def test_single_slice_series_is_refused(tmp_path):
    r = one_study(tmp_path, lambda d: write_dicom_series(d / "scout", head_phantom()[:1]))
    raises(lambda: NeuroStudies(r, **TINY)[0], "scout: field 'series': 1 distinct slice(s)")

def test_skip_quarantines_bad_series_and_keeps_good_ones(fixture_root, tmp_path):
    root = tmp_path / "r"; shutil.copytree(fixture_root, root)
    edit_slice(root / "mr_dicom" / "T2_AX", 0, RescaleSlope=0)
    q = Quarantine()
    ds = NeuroStudies(root, on_error="skip", quarantine=q, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        xs = [ds[i][0] for i in range(len(ds))]
    assert [x.field for x in q] == ["RescaleSlope"] and all(x.shape == (1, 32, 32, 32) for x in xs)
    # the bad series is removed, not replaced by its neighbour: the length counts good series, no series appears twice
    strict = NeuroStudies(root, **SMALL)
    assert len(ds) == len(strict) - 1 and [it["path"] for it in ds.items] == [it["path"] for it in strict.items if it["path"].name != "T2_AX"]
    at = {it["path"]: k for k, it in enumerate(strict.items)}
    assert all(torch.equal(x, strict[at[it["path"]]][0]) for x, it in zip(xs, ds.items)) and q.lost() == {"all": 1}  # each its own volume


def _ball_on_grid(affine, shape=(64, 64, 20), centre=(3.0, -4.0, 5.0), radius=10.0) -> np.ndarray:
    "A ball (1000 HU inside, -1000 outside) of `radius` mm at world `centre`, sampled at the voxel centres of `affine`."
    ijk = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:]
    inside = np.linalg.norm(world - np.array(centre)[:, None], axis=0) < radius
    return np.where(inside, 1000.0, -1000.0).reshape(shape).astype(np.float32)


def test_a_gantry_tilt_is_resampled_not_distorted(tmp_path):
    "A ball on a grid tilted 20°: as DICOM (the tilt in the slice positions) it comes back upright; read_nifti refuses the NIfTI."
    from sslmed.domains.neuro import read_nifti
    t = np.tan(np.deg2rad(20))
    k, r, c = np.meshgrid(np.arange(20), np.arange(64), np.arange(64), indexing="ij")
    hu = np.where((c - 32 - 3.0) ** 2 + (r - 32 + 2 * t * k + 4.0) ** 2 + (2.0 * k - 20 - 5.0) ** 2 < 100, 1000.0, -1000.0)
    files = write_dicom_series(tmp_path / "r" / "tilt" / "ax", hu, spacing=(2.0, 1.0, 1.0), origin=(-32, -32, -20))
    for f in files:                                           # slice k sits 2·tan(20°)·k mm further along y, as a tilted gantry puts it
        d = pydicom.dcmread(f); p = [float(v) for v in d.ImagePositionPatient]
        d.ImagePositionPatient = [p[0], p[1] + (p[2] + 20) * t, p[2]]; d.save_as(f)
    x = NeuroStudies(tmp_path / "r", spacing=(2, 1, 1), max_crop_size=(2, 4, 4), patch_size=16)[0][0][0].numpy()
    z, y, _ = np.nonzero(x > 0)
    assert z.max() - z.min() + 1 == 10
    rows = np.array([y[z == q].mean() for q in np.unique(z)])
    assert np.ptp(rows) < 1.0, rows          # before: the normal's component only, and the ball drifted 6.7 voxels over its slices
    A = np.array([[1, 0, 0, -32], [0, 1, 2 * t, -32], [0, 0, 2, -20], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(_ball_on_grid(A), A), tmp_path / "tilt.nii.gz")
    raises(lambda: read_nifti(tmp_path / "tilt.nii.gz"), "tilt.nii.gz: field 'affine'", "sheared voxel axes (a gantry tilt)")


def test_zero_pixdim_without_sform_or_qform_is_refused_from_the_raw_header(tmp_path):
    "nibabel mends pixdim 0 to 1 mm on load; the stored header says 0, and the file is refused naming the field."
    img = nib.Nifti1Image(_ball_on_grid(np.diag([1.0, 1, 2, 1])), None)
    img.header["pixdim"][1:4] = [1.0, 0.0, 2.0]; img.header.set_sform(None, 0); img.header.set_qform(None, 0)
    (tmp_path / "r" / "s").mkdir(parents=True); f = tmp_path / "r" / "s" / "ct.nii.gz"; nib.save(img, f)
    e = raises(lambda: NeuroStudies(tmp_path / "r", **SMALL)[0], f"{f}: field 'pixdim'")
    assert e.reason == ("voxel sizes [1.0, 0.0, 2.0] mm as stored (sform_code 0, qform_code 0: the affine is built from them): "
                        "zero or missing; nibabel would read 1 mm, so the file is refused")

# --- property: seeded random corruption of fixture files ------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_random_corruption_gives_a_volume_or_a_data_error(fixture_root, tmp_path, seed):
    "Truncate, zero or flip bytes of one fixture file: the reader returns a finite volume of the fixed size, or a DataError naming a file of that series."
    rng = np.random.default_rng(seed)
    root = tmp_path / "r"; shutil.copytree(fixture_root, root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".dcm", ".gz"))
    f = files[rng.integers(len(files))]
    b = bytearray(f.read_bytes())
    kind = rng.integers(3)
    if kind == 0: b = b[:rng.integers(1, len(b))]
    else:
        at = rng.integers(0, len(b), 64)
        for i in at: b[i] = 0 if kind == 1 else b[i] ^ 0xFF
    f.write_bytes(bytes(b))
    series = f.parent if f.suffix == ".dcm" else f
    try:
        ds = NeuroStudies(root, **SMALL)
        i = next(k for k, it in enumerate(ds.items) if Path(it["path"]) == series)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            x, y = ds[i]
    except DataError as e:
        assert str(series) in e.file or e.file.startswith(str(series)), e
        return
    assert x.shape == (1, 32, 32, 32) and torch.isfinite(x).all() and y["mask"].any()

# --- parity with seed 004 -------------------------------------------------------------------------------------------

def parity_rows() -> list[dict]:
    text = (ROOT / "data_cards/neuro_studies.md").read_text()
    block = text.split("<!-- parity:start -->")[1].split("<!-- parity:end -->")[0]
    rows = [[c.strip().strip("`") for c in line.strip().strip("|").split("|")] for line in block.strip().splitlines()[2:]]
    return [dict(zip(("seed_key", "seed", "key", "value", "parity", "why"), r)) for r in rows]

def test_parity_table_matches_the_full_recipe_and_the_seed_keys():
    cfg = recipe("neuro", "ema_jepa", "full", root=ROOT)
    flat = flatten_keys(json.loads(json.dumps(cfg.__dict__)))
    rows = parity_rows()
    assert len(rows) >= 15
    for r in rows:
        assert r["parity"] in ("same", "different"), r
        if r["parity"] == "different": assert r["why"], r
        if r["key"].startswith("classify.") or classification_row(r):   # the classification system's own translation
            over = dict(o.split("=", 1) for o in seed_overrides(flatten_to_nested({r["seed_key"]: yaml.safe_load(r["seed"])}), NEURO_CLASSIFY_KEYS))
            if r["key"] != "—": assert yaml.safe_load(over[r["key"].removeprefix("classify.")]) == yaml.safe_load(r["value"]), (r, over)
            assert r["parity"] == "same" and r["seed_key"] in NEURO_SEED_KEYS and refused(r), r   # pretraining still says where it goes
            continue
        if r["seed_key"] in NEURO_SEED_KEYS:
            t = NEURO_SEED_KEYS[r["seed_key"]]
            if refused(r): assert r["parity"] == "different", r     # refused with its reason: never "same"
            elif isinstance(t, Fixed) and t.value is None: assert r["parity"] == "different", r   # refused; the row names the key to set
            elif isinstance(t, Derived):   # translated with other keys: the row's key is among what its value translates to
                if r["key"] != "—": assert r["key"] in translated_keys(r), r
            else: assert first_key(t) == (None if r["key"] == "—" else r["key"]), r
        if r["key"] != "—" and r["value"] != "—":
            assert flat[r["key"]] == yaml.safe_load(r["value"]), (r, flat[r["key"]])
        if r["parity"] == "same" and r["seed_key"] in NEURO_SEED_KEYS and r["value"] != "—" and r["seed"] != "(open)":
            got = dict(o.split("=", 1) for o in neuro_seed_overrides(flatten_to_nested({r["seed_key"]: yaml.safe_load(r["seed"])})))
            assert yaml.safe_load(got[r["key"]]) == flat[r["key"]], r

def classification_row(r) -> bool:
    "A row whose seed value only a classification config holds: refused by the pretraining translation, taken by NEURO_CLASSIFY_KEYS."
    if r["seed_key"] not in NEURO_CLASSIFY_KEYS or r["seed"] == "(open)" or not refused(r): return False
    seed_overrides(flatten_to_nested({r["seed_key"]: yaml.safe_load(r["seed"])}), NEURO_CLASSIFY_KEYS)   # raises if not taken
    return True

def refused(r) -> bool:
    "Whether the row's seed value is refused by the translation (an error naming the key)."
    if r["seed"] == "(open)": return False
    try: translated_keys(r)
    except ValueError as e:
        assert r["seed_key"] in str(e), e
        return True
    return False

def translated_keys(r) -> list:
    "The sslmed keys a row's seed value translates to."
    return [o.split("=", 1)[0] for o in neuro_seed_overrides(flatten_to_nested({r["seed_key"]: yaml.safe_load(r["seed"])}))]

def first_key(t):
    "The sslmed key a seed key translates to first (None: fixed or ignored)."
    if t is None or isinstance(t, (Fixed, Ignored)): return None
    if isinstance(t, list): return first_key(t[0])
    return t if isinstance(t, str) else t[0]

def test_fixed_seed_keys_refuse_other_values_and_name_the_key():
    "Every Fixed key accepts its value and refuses another, naming the key; Ignored keys accept anything."
    fixed = {k: t for k, t in NEURO_SEED_KEYS.items() if isinstance(t, Fixed)}
    assert len(fixed) >= 8 and not [k for k, t in NEURO_SEED_KEYS.items() if t is None]
    for k, t in fixed.items():
        assert neuro_seed_overrides(flatten_to_nested({k: t.value})) == []
        with pytest.raises(ValueError, match=re.escape(f"seed key {k!r}")):
            neuro_seed_overrides(flatten_to_nested({k: "something else"}))
    for k, t in NEURO_SEED_KEYS.items():
        if isinstance(t, Ignored): assert neuro_seed_overrides(flatten_to_nested({k: 7})) == []

def flatten_to_nested(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        node = out
        *ps, leaf = k.split(".")
        for p in ps: node = node.setdefault(p, {})
        node[leaf] = v
    return out

def test_seed_shaped_config_loads_into_the_full_recipe(fixture_root):
    guide = {"data": {"raw_data_dir": str(fixture_root), "mode_mapping": {"ct_axial": "ct", "mr_nifti": "mri"},
                      "dataset": {"train": {"params": {"max_crop_size": [2, 2, 2], "ct_window_probs": [0.5, 0.25, 0.25], "augment": False}}}},
             "loader": {"train": {"batch_size": 2, "collate_fn": {"remove_background": True, "patch_drop_rate": 0.1}}},
             "system": {"params": {"ema_beta": [0.99, 1.0], "opt_cf": {"which": "adamw", "params": {"lr": 1e-4}}}}}
    cfg = recipe("neuro", "ema_jepa", "full", neuro_seed_overrides(guide), root=ROOT)
    assert (cfg.data_root, cfg.data["max_crop_size"], cfg.views["window_probs"], cfg.views["augment"], cfg.batch_size,
            cfg.method_kw["momentum"], cfg.lr) == (str(fixture_root), [2, 2, 2], [0.5, 0.25, 0.25], False, 2, [0.99, 1.0], 1e-4)
    ds = get_domain("neuro").datasets["neuro_studies"](root=cfg.data_root, **{**cfg.data, "cache_dir": None, "spacing": [6, 6, 6]})
    assert [it["modality"] for it in ds.items if it["study"] in ("ct_axial", "mr_nifti")] == ["ct", "ct", "mri"]
    assert ds[0][0].shape == (1, 32, 32, 32)
    with pytest.raises(ValueError, match="data.dataset.train.params.max_crop"):
        neuro_seed_overrides({"data": {"dataset": {"train": {"params": {"max_crop": 1}}}}})
