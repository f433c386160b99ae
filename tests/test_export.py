"""`sslmed export` on one smoke run per registered domain: the folder loads back the way the field loads it — timm's
`local-dir:` for timm encoders, `sslmed.encoders.from_pretrained` for sslmed's own — with the run's weights bit for bit
and its features to 1e-5, without reading any pickle, and with a model card whose hub front matter parses and whose
Markdown renders."""
import json, pickle, shutil, struct, subprocess, sys, textwrap
from pathlib import Path
import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file
from sslmed.domain import get_domain, list_domains
from sslmed.encoders import from_pretrained
from sslmed.export import example_input, export_run
from sslmed.config import TrainConfig, recipe
from sslmed.runs import load_backbone
from sslmed.train import fit

ROOT = Path(__file__).resolve().parents[1]
TINY = ["steps=2", "batch_size=4", "data.n=8", "log_every=1", "ckpt_every=2", "progress=false"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    "domain -> (run folder, exported folder): two steps of LeJEPA with the domain's smoke recipe, then `export_run`."
    base, out = tmp_path_factory.mktemp("export"), {}
    for d in list_domains():
        run = base / "runs" / d
        fit(recipe(d, "lejepa", "smoke", [*TINY, f"out_dir={run}"]))
        out[d] = run, export_run(run, base / "export" / d)
    return out


@pytest.mark.parametrize("domain", list_domains())
def test_an_export_holds_the_runs_weights_and_gives_its_features(exported, domain):
    run, folder = exported[domain]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    spec = json.loads((folder / "config.json").read_text())["sslmed"]
    saved = torch.load(run / "backbone.pt", weights_only=True)  # the seed systems' file, read on its own
    weights = load_file(str(folder / "model.safetensors"))
    assert sorted(weights) == sorted(saved) and all(torch.equal(weights[k], v) for k, v in saved.items())
    enc, cfg = load_backbone(run / "backbone.pt"), TrainConfig.from_yaml(run / "config.yaml")
    x = example_input(cfg, n=3)
    with torch.no_grad():
        if spec["timm"]:  # 2D: timm alone, as a reader loads it
            model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
            xin = x.expand(-1, spec["input_size"][0], *x.shape[2:])
            got = model(xin)
            data = timm.data.resolve_data_config({}, model=model)
            c = spec["input_size"][0]
            assert data["input_size"] == (c, *x.shape[2:]) and data["mean"] == [0.0] * c and data["std"] == [1.0] * c
            assert model.num_classes == 0 and model.num_features == enc.embed_dim == got.shape[1]
            clf = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=5).eval()
            assert clf(xin).shape == (3, 5)  # a new head on the same backbone
            head = {f"{clf.pretrained_cfg['classifier']}.weight", f"{clf.pretrained_cfg['classifier']}.bias"}
            assert all(torch.equal(v, weights[k]) for k, v in clf.state_dict().items() if k not in head)
        else:  # 1D and 3D: sslmed's own encoders
            got = from_pretrained(folder)(x)
        want = enc(x)
    assert spec["features_match"] == "pooled"
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def _is_safetensors(b: bytes) -> bool:
    "A safetensors file: an 8-byte little-endian header length, then that many bytes of JSON."
    n = struct.unpack("<Q", b[:8])[0]
    return 8 + n <= len(b) and isinstance(json.loads(b[8:8 + n]), dict)


class _Trap:
    "Unpickled by plain pickle, it creates its marker file; `torch.load(weights_only=True)` refuses it."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (open, (self.marker, "w"))


LOADER = textwrap.dedent("""
    import json, sys
    seen = []
    def hook(event, args):
        if event == "open" and isinstance(args[0], str) and args[0].startswith(sys.argv[1]): seen.append(args[0])
        if event == "pickle.find_class": seen.append("pickle.find_class " + ".".join(map(str, args)))
    sys.addaudithook(hook)
    import torch, timm
    from safetensors.torch import save_file
    from sslmed.encoders import from_pretrained
    spec = json.load(open(sys.argv[2]))
    feats = {}
    for d, s in spec.items():
        torch.manual_seed(0)
        x = torch.rand(2, *s["input_size"])
        model = timm.create_model("local-dir:" + s["folder"], pretrained=True) if s["timm"] else from_pretrained(s["folder"])
        with torch.no_grad(): feats[d] = model.eval()(x).contiguous()
    save_file(feats, sys.argv[3])
    print(json.dumps(seen))
""")


def test_loading_an_export_reads_no_pickle(exported, tmp_path):
    "Every file is JSON, Markdown or safetensors; with pickle decoys beside them, a fresh process loads every domain's "
    "folder opening no file but config.json and resolving no pickle global, and gets the run's features."
    spec, markers = {}, []
    for d, (run, folder) in exported.items():
        for f in folder.iterdir():
            b = f.read_bytes()
            assert not b.startswith((b"\x80", b"PK")), f  # neither a pickle nor torch.save's zip
            if f.suffix == ".safetensors": assert _is_safetensors(b), f
            elif f.suffix == ".json": json.loads(b)
            else: assert f.name == "README.md" and b.decode("utf-8"), f
        copy = tmp_path / "folders" / d
        shutil.copytree(folder, copy)
        markers.append(tmp_path / f"{d}.unpickled")
        for decoy in ("pytorch_model.bin", "pytorch_model.pth", "model.pth", "weights.pth.tar"):  # timm's fallbacks
            (copy / decoy).write_bytes(pickle.dumps(_Trap(markers[-1])))
        s = json.loads((folder / "config.json").read_text())["sslmed"]
        spec[d] = {"folder": str(copy), "timm": s["timm"], "input_size": s["input_size"]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, "-c", LOADER, str(tmp_path / "folders"), str(tmp_path / "spec.json"), str(tmp_path / "f.safetensors")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen and all(Path(p).name == "config.json" for p in seen), seen
    assert not any(m.exists() for m in markers)
    feats = load_file(str(tmp_path / "f.safetensors"))
    for d, (run, folder) in exported.items():
        torch.manual_seed(0)
        x = torch.rand(2, *spec[d]["input_size"])
        enc = load_backbone(run / "backbone.pt")
        with torch.no_grad(): want = enc(x[:, :enc.in_chans])
        torch.testing.assert_close(feats[d], want, rtol=0, atol=1e-5)


def test_the_model_card_has_hub_front_matter_and_renders(exported):
    markdown = pytest.importorskip("markdown")
    meta = pytest.importorskip("mkdocs.utils.meta")  # how the docs site (MkDocs) reads a page's front matter
    for d, (run, folder) in exported.items():
        text = (folder / "README.md").read_text()
        body, fm = meta.get_data(text)
        assert fm == yaml.safe_load(text.split("---\n")[1]) and not body.startswith("---")
        assert fm["license"] == "apache-2.0" and fm["datasets"] == [f"phantom_{d}"] and {"phantom", "lejepa", d} <= set(fm["tags"])
        assert fm["metrics"] == sorted({t.metric for t in get_domain(d).tasks.values()}) and "model-index" not in fm
        assert fm["pipeline_tag"] in ("image-feature-extraction", "feature-extraction")
        html = markdown.markdown(body, extensions=["tables", "fenced_code"])
        assert html.count("<h2") >= 5 and "Not a medical model" in html and "<pre><code" in html
        assert "None: no paper profile" in body and "upload_folder(" in body
        assert json.loads(body.split("```json\n")[1].split("```")[0])["backbone_sha256"]


def test_a_run_that_t1_trained_carries_its_scores(tmp_path):
    "The smoke T1 run of LeJEPA on ECG (seed 0, T1's overrides): its card's model-index is T1's rows for that seed."
    import pandas as pd
    run = tmp_path / "run"
    fit(recipe("ecg", "lejepa", "smoke", ["seed=0", "steps=10", "batch_size=16", "data.n=256", f"out_dir={run}", "progress=false"]))
    folder = export_run(run, tmp_path / "out")
    fm = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
    rows = pd.read_csv(ROOT / "figures/smoke/tables/T1_all_scores.csv").query("domain == 'ecg' and method == 'lejepa' and seed == 0")
    got = sorted((r["task"]["name"], r["metrics"][0]["value"]) for r in fm["model-index"][0]["results"])
    assert got == sorted((f"{r.label} ({r.probe} probe on frozen features)", float(r.auroc)) for r in rows.itertuples())
