"""ARCADE on read: a bad-input corpus, a seeded random-corruption property test, the full recipe on the fixture, and parity
with seed 000 (its YAML through `seed_keys`, and the parity table of data_cards/arcade.md against recipes/full/angio.yaml)."""
import dataclasses, importlib, json, re, shutil, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from sslmed.core import project_root
from sslmed.data.core import DataError, Quarantine
from sslmed.domain import get_domain, seed_overrides
from sslmed.domains.angio import ARCADE, ARCADE_PRETRAIN_FRAMES, make_arcade_fixture, seed_epochs_to_steps
from sslmed.train import build_dataset
from sslmed.config import recipe
from sslmed.runs import tb_tags

ROOT = Path(project_root())

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    "A pristine fixture and what it holds."
    root = tmp_path_factory.mktemp("arcade") / "arcade"
    return root, make_arcade_fixture(root, seed=3, n_images=3, size=24)

@pytest.fixture
def arc(base, tmp_path):
    "A fresh copy of the fixture, to break."
    shutil.copytree(base[0], tmp_path / "arcade")
    return tmp_path / "arcade"

def edit(root, subset, split, fn):
    f = root / subset / split / "annotations" / f"{split}.json"
    c = json.loads(f.read_text()); fn(c); f.write_text(json.dumps(c))

def reads(root, **kw):
    "Every item of a dataset, loaded."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = ARCADE(root, **kw)
        return ds, [ds[k] for k in range(len(ds))]

def raises(fn, file_end, field, reason=""):
    with pytest.raises(DataError) as e: fn()
    assert e.value.file.endswith(file_end), e.value
    assert e.value.field == field, e.value
    assert reason in e.value.reason, e.value

# ---------------------------------------------------------------- bad-input corpus (class: case -> outcome)

def test_ids_duplicated_image_id_is_named_and_both_frames_quarantined(arc, base):
    edit(arc, "stenosis", "train", lambda c: c["images"][2].update(id=1))  # frame 3 takes frame 1's id (and its lesion)
    raises(lambda: ARCADE(arc), "train.json", "images[0].id", "given to more than one image")
    q = Quarantine()
    ds, got = reads(arc, on_error="skip", quarantine=q)
    assert [it["path"].name for it in ds.items] == ["2.png"] and got[0][1]["n_stenosis"] == base[1][("stenosis", "train", "2.png")]
    assert [r.field for r in q] == ["images[0].id", "images[2].id"]

def test_ids_bool_or_string_image_id_is_not_an_id(arc):
    edit(arc, "stenosis", "train", lambda c: c["images"][0].update(id="1"))
    raises(lambda: ARCADE(arc), "train.json", "annotations[0].image_id", "no image with id 1")  # its annotations are orphans
    edit(arc, "stenosis", "train", lambda c: (c["images"][0].update(id=1), c["images"][2].update(id=True)))
    raises(lambda: ARCADE(arc), "train.json", "images[2].id", "True is not an integer")

def test_paths_file_name_outside_the_images_folder(arc):
    edit(arc, "stenosis", "train", lambda c: c["images"][0].update(file_name="../../test/images/1.png"))
    raises(lambda: ARCADE(arc), "train.json", "images[0].file_name", "resolves outside")
    edit(arc, "stenosis", "train", lambda c: c["images"][0].update(file_name="/etc/hostname"))
    raises(lambda: ARCADE(arc), "train.json", "images[0].file_name", "resolves outside")

def test_paths_one_file_listed_for_two_ids(arc):
    edit(arc, "stenosis", "train", lambda c: c["images"][2].update(file_name="1.png"))
    raises(lambda: ARCADE(arc), "train.json", "images[0].file_name", "listed for more than one image id")

def test_paths_ambiguous_annotation_files_and_frames(arc):
    d = arc / "stenosis" / "train"
    shutil.copy(d / "annotations/train.json", d / "annotations/train.JSON")
    raises(lambda: ARCADE(arc), "annotations", "annotations", "ambiguous")
    (d / "annotations/train.JSON").unlink()
    (d / "images/3.png").rename(d / "images/3.PNG")
    assert len(ARCADE(arc)) == 3                                   # one case-insensitive match: taken
    shutil.copy(d / "images/3.PNG", d / "images/3.Png")
    raises(lambda: ARCADE(arc), "train.json", "images[2].file_name", "differ only in case")

def test_annotations_unknown_image_id_fails_the_file_even_when_skipping(arc):
    edit(arc, "stenosis", "train", lambda c: c["annotations"][0].update(image_id=77))
    for mode in ("raise", "skip"):  # which frame lost a lesion is unknowable: no frame's label is certain
        raises(lambda: ARCADE(arc, on_error=mode), "train.json", "annotations[0].image_id", "no image with id 77")

def test_annotations_unknown_category_quarantines_its_frame_only(arc, base):
    edit(arc, "stenosis", "train", lambda c: c["annotations"][0].update(category_id=27))
    raises(lambda: ARCADE(arc), "train.json", "annotations[id=1].category_id", "unknown category 27")
    ds, got = reads(arc, on_error="skip")
    assert [y["n_stenosis"] for _, y in got] == [base[1][("stenosis", "train", it["path"].name)] for it in ds.items]
    assert "1.png" not in [it["path"].name for it in ds.items]

def test_annotations_polygon_outside_the_frame(arc):
    edit(arc, "stenosis", "train", lambda c: c["annotations"][0]["segmentation"][0].__setitem__(0, 500.0))
    raises(lambda: ARCADE(arc), "train.json", "annotations[id=1].segmentation", "outside the 24x24 frame")

def test_categories_vocabulary_mismatch_is_an_error_never_an_empty_dataset(arc):
    edit(arc, "syntax", "train", lambda c: c["categories"][-1].update(name="Stenosis"))
    for task in ("stenosis", "segmentation"):
        raises(lambda: ARCADE(arc, "syntax", task=task, on_error="skip"), "train.json", "categories", "unknown ['Stenosis']")

def test_categories_renumbered_consistently_give_the_same_labels(arc, base):
    def renumber(c):
        for k in c["categories"]: k["id"] += 100
        for a in c["annotations"]: a["category_id"] += 100
    edit(arc, "syntax", "train", renumber)
    _, got = reads(arc, subset="syntax", task="all")
    _, ref = reads(base[0], subset="syntax", task="all")
    for (x, y), (x0, y0) in zip(got, ref): assert torch.equal(x, x0) and torch.equal(y["mask"], y0["mask"])

def test_fields_width_height_must_be_positive_integers(arc):
    edit(arc, "stenosis", "train", lambda c: c["images"][1].update(width=-48))
    raises(lambda: ARCADE(arc), "train.json", "images[1].width", "outside the integers")
    edit(arc, "stenosis", "train", lambda c: c["images"][1].update(width="48"))
    assert len(ARCADE(arc)) == 3                                   # "48" is the integer 48, as in a CSV cell
    edit(arc, "stenosis", "train", lambda c: c["images"][1].update(width=47))
    raises(lambda: ARCADE(arc), "2.png", "size", "image is 48x48 (WxH), train.json says 47x48")

def test_content_one_frame_in_both_subsets(arc):
    shutil.copy(arc / "stenosis/train/images/1.png", arc / "syntax/train/images/1.png")  # same 24x24 size in both
    raises(lambda: ARCADE(arc, "both"), "1.png", "content", "byte-identical")
    ds, _ = reads(arc, subset="both", on_error="skip")
    assert len(ds) == 4 and "1.png" not in [it["path"].name for it in ds.items]

def test_content_corrupt_frames(arc):
    p = arc / "stenosis/train/images/2.png"
    b = bytearray(p.read_bytes()); b[len(b) // 2] ^= 4; p.write_bytes(bytes(b))
    raises(lambda: ARCADE(arc), "2.png", "image", "CRC mismatch")
    p.write_bytes(b"not a png")
    raises(lambda: ARCADE(arc), "2.png", "image", "not a PNG")

def test_pixels_16_bit_full_precision_and_one_size(arc):
    ds = ARCADE(arc, "stenosis", "train", size=40)
    png = np.asarray(Image.open(arc / "stenosis/train/images/1.png"))
    assert png.dtype == np.uint16 and (png % 257).any()            # values an 8-bit frame cannot hold
    x = ARCADE(arc, "stenosis", "train")[0][0]
    assert torch.equal(x[0] * 65535, torch.from_numpy(png.astype(np.float32)))
    assert {tuple(ds[k][0].shape) for k in range(3)} == {(1, 40, 40)}
    seg = ARCADE(arc, "syntax", "test", task="segmentation", size=40)  # a non-square frame, and its mask
    x, y = seg[2]
    assert x.shape == (1, 40, 40) and y["mask"].shape == (40, 40) and set(y["mask"].unique().tolist()) <= set(range(27))

# ---------------------------------------------------------------- property: random corruption never silently changes a value

BAD_VALUES = [None, -1, "x", 3.5, True, [], {}, 10 ** 9]
FIELDS = {"images": ["id", "file_name", "width", "height"], "annotations": ["image_id", "category_id", "segmentation"]}

def corrupt(root, rng) -> str:
    "One random corruption that no valid file holds: a flipped bit in a frame, or an invalid value in a JSON field."
    subset, split = ["syntax", "stenosis"][rng.integers(2)], "train"
    if rng.random() < 0.4:
        p = sorted((root / subset / split / "images").iterdir())[rng.integers(3)]
        b = bytearray(p.read_bytes()); i = int(rng.integers(len(b))); b[i] ^= 1 << int(rng.integers(8)); p.write_bytes(bytes(b))
        return f"bit {i} of {p.name}"
    part = ["images", "annotations"][rng.integers(2)]
    key = FIELDS[part][rng.integers(len(FIELDS[part]))]
    val = BAD_VALUES[rng.integers(len(BAD_VALUES))]
    def fn(c):
        if c[part]: c[part][rng.integers(len(c[part]))][key] = val
    edit(root, subset, split, fn)
    return f"{subset} {part}.{key}={val!r}"

@pytest.mark.parametrize("seed", range(40))
def test_random_corruption_gives_the_right_value_or_a_named_error(base, tmp_path, seed):
    rng = np.random.default_rng(seed)
    root = tmp_path / "arcade"; shutil.copytree(base[0], root)
    what = corrupt(root, rng)
    _, ref = reads(base[0], subset="both", task="all")
    ref = {(it["subset"], it["path"].name): r for it, r in zip(ARCADE(base[0], "both").items, ref)}
    mode = ["raise", "skip"][seed % 2]
    try: ds, got = reads(root, subset="both", task="all", on_error=mode)
    except DataError as e:
        assert e.field and str(root) in e.file, (what, e)
        return
    for it, (x, y) in zip(ds.items, got):
        x0, y0 = ref[(it["subset"], it["path"].name)]
        assert torch.equal(x, x0) and y["stenosis"] == y0["stenosis"] and torch.equal(y["mask"], y0["mask"]), what
    assert all(r.field and str(root) in r.path for r in ds.quarantine), what
    assert len(ds) + len(ds.quarantine) == len(ref), what          # what is missing is in the quarantine, not silently gone

# ---------------------------------------------------------------- the full profile on the fixture

def test_full_profile_pretrains_on_every_training_frame_and_evaluates_both_classes(base, monkeypatch):
    from sslmed.protocols import eval_datasets
    root = base[0]
    cfg = recipe("angio", "lejepa", "full", [f"data_root={root}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre = build_dataset(cfg)
        xs = torch.stack([pre[k][0] for k in range(len(pre))])
    # every frame of train and val in both subsets, and extra/, less the corrupt syntax/val one: removed, not replaced
    assert len(pre) == 2 * (3 + 3) + 2 - 1 and xs.shape[1:] == (1, cfg.data["size"], cfg.data["size"])
    assert len({x.numpy().tobytes() for x in xs}) == len(pre)  # no frame twice
    assert [(Path(r.path).name, r.split) for r in pre.quarantine] == [("3.png", "pretrain")]
    assert not any("test" in p.parts for p in pre.items)
    monkeypatch.setenv("SSLMED_DATA_ARCADE", str(root))
    tr, te = eval_datasets("angio", "full")
    for ds, split in ((tr, "train"), (te, "test")):
        assert set(ds.stenosis_labels) == {0, 1} and ds.split == split and ds.size == cfg.data["size"]
        want = sorted(int(n > 0) for (s, sp, _), n in base[1].items() if sp == split)
        assert sorted(ds.stenosis_labels.tolist()) == want
    for m in ("supervised", "triplet"):  # methods trained on labels see the labelled train split only
        c = recipe("angio", m, "full", [f"data_root={root}"])
        assert set(build_dataset(c).stenosis_labels) == {0, 1} and c.data["split"] == "train"

def test_full_recipe_trains_a_step_on_the_fixture(base, tmp_path):
    from sslmed.train import fit
    small = ["encoder=vit_tiny_patch16_224", "encoder_kw={img_size: 32, patch_size: 8, depth: 1, dynamic_img_size: true}",
             "views.size=32", "data.size=32", "batch_size=4", "steps=1", "warmup_steps=0", "num_workers=0", "precision=fp32",
             "progress=false", "method_kw.proj_hidden=64", "method_kw.num_slices=32", f"data_root={base[0]}", f"out_dir={tmp_path}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit(recipe("angio", "lejepa", "full", small))
    assert res["steps"] == 1 and (tmp_path / "backbone.pt").is_file()

# ---------------------------------------------------------------- parity with seed 000

SEED_YAML = """
model:
  backbone: "vit_small_patch8_224"  # Backbone architecture
  proj_dim: 128                      # Projection dimension
  
data:
  batch_size: 32
  image_size: 256                    # 256x256 pentru angiografii
  num_views: 4                       # V views per image
  
optimizer:
  lr: 0.002
  epochs: 400
  lamb: 0.02                         # λ - balansează SIGReg și Invariance
system:
  resume: true
  resume_from: "checkpoints/lejepa/lejepa_vit_small_checkpoint_last.pth"
"""  # seed 000's two YAML snippets (configuration and resume), verbatim

def test_seed_yaml_translates_to_the_recipe_defaults():
    dom = get_domain("angio")
    seed = yaml.safe_load(SEED_YAML)
    over = seed_overrides(seed, dom.seed_keys, "lejepa_config.yaml")
    assert len(over) == 13   # num_views: V global views and no local ones, for the views and LeJEPA; epochs: steps and warmup
    cfg, ref = recipe("angio", "lejepa", "full", over), recipe("angio", "lejepa", "full")
    a, b = dataclasses.asdict(cfg), dataclasses.asdict(ref)
    changed = {k for k in a if a[k] != b[k]}
    assert changed == {"resume", "resume_from"}, changed           # the defaults are the seed's settings
    assert cfg.steps == 400 * (ARCADE_PRETRAIN_FRAMES // 32) == seed_epochs_to_steps(400) == 30000
    assert seed["data"]["image_size"] == cfg.views["size"] and "img_size" not in cfg.encoder_kw  # timm's 224 grid, resampled
    assert cfg.method_kw["n_global"] == seed["data"]["num_views"] == cfg.views["n_global"] and cfg.views["n_local"] == 0
    with pytest.raises(ValueError, match=r"\['optimizer.momentum'\] have no sslmed equivalent"):
        seed_overrides({"optimizer": {"momentum": 0.9}}, dom.seed_keys, "lejepa_config.yaml")

def parity_rows() -> list[list[str]]:
    text = (ROOT / "data_cards/arcade.md").read_text()
    sec = text.split("## Parity with seed 000", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in sec.splitlines() if l.startswith("|")]
    assert rows[0][:5] == ["seed 000", "seed value", "sslmed key or function", "sslmed value", "same / different (why)"]
    return rows[2:]

def _val(cell: str):
    cell = cell.strip().strip("`")
    return None if cell in ("—", "") else yaml.safe_load(cell)

def _seed_value(name: str, value, dom, key: str):
    "A seed setting as sslmed reads it: through `seed_keys` when the row names a seed key for `key`, else as it is."
    name = name.strip("`").split(" ")[0]
    if name not in dom.seed_keys: return value
    *parents, leaf = name.split(".")
    nested = {leaf: value}
    for p in reversed(parents): nested = {p: nested}
    k, v = seed_overrides(nested, dom.seed_keys)[0].split("=", 1)
    return yaml.safe_load(v) if k == key else value

def test_parity_table_matches_the_full_recipe():
    cfg = dataclasses.asdict(recipe("angio", "lejepa", "full"))
    dom, checked = get_domain("angio"), 0
    for seed_name, seed_val, key, val, verdict in (r[:5] for r in parity_rows()):
        assert re.match(r"(same|different|not named)", verdict), (seed_name, verdict)
        k = key.strip("`")
        if k.startswith("cfg."):
            node = cfg
            for part in k[4:].split("."): node = node[part]
            assert node == _val(val), (key, node, val); checked += 1
            if verdict.startswith("same") and _val(seed_val) is not None:
                assert _seed_value(seed_name, _val(seed_val), dom, k[4:]) == node, (seed_name, seed_val)
        elif k.startswith("domain."):
            assert getattr(dom, k[7:]) == _val(val), (key, val); checked += 1
        elif k.startswith("tb:"):
            assert val.strip("`") in tb_tags(k[3:], "lejepa"), (key, val); checked += 1
            if verdict.startswith("same"): assert seed_name.strip("`") == val.strip("`")
        elif k.startswith("sslmed."):
            mod, _, name = k.partition(" ")[0].rpartition(".")
            assert hasattr(importlib.import_module(mod), name), key; checked += 1
    assert checked >= 25, checked

def test_backbone_loads_with_the_seed_snippet_verbatim_and_gives_the_encoders_features(tmp_path, monkeypatch):
    import timm
    from sslmed.encoders import create_encoder
    from sslmed.runs import save_backbone
    cfg = recipe("angio", "lejepa", "full")
    jepa_kw = {m: recipe("angio", m, "full").encoder_kw for m in ("sigreg_jepa", "ema_jepa")}
    torch.manual_seed(0)
    enc = create_encoder(cfg.encoder, get_domain("angio").in_chans, **cfg.encoder_kw).eval()
    run = tmp_path / "run"
    save_backbone(run / "backbone.pt", enc)
    monkeypatch.chdir(tmp_path)
    # seed 000's fine-tuning snippet, verbatim but for the path
    backbone = timm.create_model('vit_small_patch8_224', num_classes=0)
    backbone.load_state_dict(torch.load('run/backbone.pt'))
    classifier = torch.nn.Linear(384, 2)
    model = torch.nn.Sequential(backbone, classifier).eval()
    x = torch.rand(2, 1, 224, 224)                                 # a gray frame; the seed's frames are 3-channel
    with torch.no_grad():
        assert torch.allclose(backbone(x.repeat(1, 3, 1, 1)), enc(x), atol=1e-5)      # the same embedding (class token)
        assert torch.allclose(model(x.repeat(1, 3, 1, 1)), classifier(enc(x)), atol=1e-5)
        # at the recipe's 256²: the same state dict in a timm model that resamples positions, as the encoder does
        dyn = timm.create_model('vit_small_patch8_224', num_classes=0, dynamic_img_size=True).eval()
        dyn.load_state_dict(torch.load('run/backbone.pt'))
        x = torch.rand(2, 1, cfg.views["size"], cfg.views["size"])
        tokens = dyn.forward_features(x.repeat(1, 3, 1, 1))
        assert torch.allclose(dyn(x.repeat(1, 3, 1, 1)), enc(x), atol=1e-5)
        assert torch.allclose(tokens[:, 1:], enc.forward_tokens(x), atol=1e-5) and tokens.shape[1] == 1 + 32 * 32
    assert backbone.num_features == enc.embed_dim == 384
    for m in ("sigreg_jepa", "ema_jepa"):   # methods that train patch tokens only are probed on their mean, not the class token
        assert jepa_kw[m] == {**cfg.encoder_kw, "pool": "mean"}


def _bomb_png(width: int, height: int) -> bytes:
    "A PNG whose header claims a `width` × `height` grey frame, every chunk CRC right: a decompression bomb to PIL."
    import struct, zlib
    def chunk(kind, data): return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decode_a_decompression_bomb_is_quarantined_on_both_paths(arc):
    "A frame header claiming 30,000² px: PIL's DecompressionBombError becomes the frame's DataError, quarantined under skip."
    victim = arc / "stenosis" / "train" / "images" / "1.png"
    victim.write_bytes(_bomb_png(30000, 30000))
    edit(arc, "stenosis", "train", lambda c: c["images"][0].update(width=30000, height=30000))
    raises(lambda: ARCADE(arc), "stenosis/train/images/1.png", "image", "cannot decode (DecompressionBombError")
    q = Quarantine()
    ds, got = reads(arc, on_error="skip", quarantine=q)                      # the labelled path
    assert [it["path"].name for it in ds.items] == ["2.png", "3.png"] and len(got) == 2
    assert [(Path(r.path).name, r.field, r.split) for r in q] == [("1.png", "image", "train")] and q.lost() == {"train": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = ARCADE.unlabeled(arc, splits=("train",), subsets=("stenosis",), extra=None, on_error="skip")
        assert [p.name for p in frames.items] == ["2.png", "3.png"]           # the unlabelled path, removed likewise
    assert [(Path(r.path).name, r.field) for r in frames.quarantine] == [("1.png", "image")]
    assert "DecompressionBombError" in frames.quarantine[0].reason
