"""Parity with seed 003 (the LeJEPA implementation guide): the table and the override block of recipes/README.md
against the live config, views, method and optimiser; the guide's own SIGReg and LeJEPA_loss, run verbatim, against
sslmed's; its learning-rate schedule against sslmed's."""
import importlib, json, math, re
from pathlib import Path
import pytest
import torch
import torch.distributed as dist
import yaml
from sslmed.core import project_root
from sslmed.domain import get_domain
from sslmed.train import build_method
from sslmed.optim import build_optimizer, warmup_cosine
from sslmed.config import recipe
from sslmed.runs import tb_tags

README = Path(project_root()) / "recipes" / "README.md"

def guide_overrides() -> list[str]:
    "The README's `# lejepa-guide overrides` YAML block as `key=value` overrides."
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    block = next(b for b in blocks if b.startswith("# lejepa-guide overrides"))
    return [f"{k}={json.dumps(v)}" for k, v in yaml.safe_load(block).items()]

def parity_rows() -> list[list[str]]:
    sec = README.read_text().split("## Parity with seed 003", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in sec.splitlines() if l.startswith("|")]
    assert rows[0] == ["guide setting", "guide value", "sslmed key or function", "sslmed value", "same / different (why)"]
    return rows[2:]

@pytest.fixture(scope="module")
def live():
    cfg = recipe("angio", "lejepa", "smoke", guide_overrides())
    method, views = build_method(cfg, get_domain("angio"))
    return cfg, method, views, build_optimizer(method, cfg)

def _val(cell: str):
    cell = cell.strip().strip("`")
    return None if cell in ("—", "") else yaml.safe_load(cell)

def _plain(v):
    return [_plain(a) for a in v] if isinstance(v, (tuple, list)) else v

def _equal(a, b) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, list) and isinstance(b, list): return len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, bool) or isinstance(b, bool): return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)): return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b

def _as_sslmed(key: str, guide):
    "The guide's value in sslmed's form: a crop size n as [n, n], a jitter strength s as torchvision's [1 - s, 1 + s]."
    if key.endswith("RandomResizedCrop.size") and isinstance(guide, int): return [guide, guide]
    if key.endswith(("brightness", "contrast", "saturation")) and isinstance(guide, (int, float)):
        return [max(0.0, 1 - guide), 1 + guide]
    return guide

def _transform(views, side: str, name: str):
    tf = views.global_tf if side == "global" else views.local_tf
    return next(t for t in tf.tfs if type(t).__name__ == name)

def _params(m): return sum(p.numel() for p in m.parameters())

def lookup(key: str, live):
    "The live value a row's key names."
    cfg, method, views, opt = live
    head, _, rest = key.partition(".")
    if head == "cfg":
        node = cfg.__dict__
        for part in rest.split("."): node = node[part]
        return node
    if head == "views": return getattr(views, rest)
    if head in ("global", "local"):
        name, attr = rest.split(".")
        return getattr(_transform(views, head, name), attr)
    if head == "method":
        if rest == "extra_params": return _params(method) - _params(method.encoder)
        node = method
        for part in rest.split("."): node = getattr(node, part)
        return node
    if head == "opt":
        group, hp = rest.split(".")
        return opt.param_groups[{"decay": 0, "no_decay": 1}[group]][hp]
    raise KeyError(key)

def test_every_row_matches_the_live_objects(live):
    checked = 0
    for setting, guide, key, val, verdict in (r[:5] for r in parity_rows()):
        assert re.match(r"(same|different)", verdict), (setting, verdict)
        k = key.strip("`")
        if k.startswith("tb:"):
            assert val.strip("`") in tb_tags(k[3:], "lejepa"), (key, val)
        elif k.startswith("sslmed."):
            parts, obj = k.split("."), None
            for i in range(len(parts), 0, -1):   # the longest importable module, then attributes
                try: obj = importlib.import_module(".".join(parts[:i])); break
                except ModuleNotFoundError: continue
            for a in parts[i:]: obj = getattr(obj, a)
        else:
            got = lookup(k, live)
            assert _equal(got, _val(val)), (setting, key, got, val)
            if verdict.startswith("same") and _val(guide) is not None:
                assert _equal(_as_sslmed(k, _val(guide)), got), (setting, guide, got)
        checked += 1
    assert checked >= 40, checked

def test_the_preset_views_apply_to_every_view_and_the_method_has_no_projector(live):
    cfg, method, views, opt = live
    for side in ("global", "local"):       # the same colour pipeline on both kinds of crops
        cj, hs, gs = (_transform(views, side, n) for n in ("ColorJitter", "HueShift", "RandomGrayscale"))
        assert (cj.brightness, cj.contrast, cj.saturation, cj.p, hs.hue, gs.p) == ((0.6, 1.4),) * 3 + (1.0, 0.1, 0.2)
    assert not any("projector" in n for n, _ in method.named_parameters())
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in method.encoder.parameters()}

# ---------------------------------------------------------------- the guide's code, verbatim (seed 003, sections 1 and 2)

def SIGReg(x, global_step, num_slices=256):
    dev = dict(device=x.device)
    g = torch.Generator(**dev)
    g.manual_seed(global_step)
    proj_shape = (x.size(1), num_slices)
    A = torch.randn(proj_shape, generator=g, **dev)
    A /= A.norm(p=2, dim=0)
    t = torch.linspace(-5, 5, 17, **dev)
    exp_f = torch.exp(-0.5 * t**2)
    x_t = (x @ A).unsqueeze(2) * t
    ecf = (1j * x_t).exp().mean(0)
    if dist.is_initialized():
        dist.all_reduce(ecf, op=dist.ReduceOp.AVG)
    err = (ecf - exp_f).abs().square().mul(exp_f)
    N = x.size(0) * (dist.get_world_size() if dist.is_initialized() else 1)
    T = torch.trapz(err, t, dim=1) * N
    return T.mean()

def LeJEPA_loss(global_views, all_views, lambd=0.05):
    bs = global_views[0].size(0)
    K = global_views[0].size(1)
    g_emb = torch.cat(global_views)
    centers = g_emb.view(-1, bs, K).mean(0)
    a_emb = torch.cat(all_views)
    a_emb = a_emb.view(-1, bs, K)
    sim = (centers - a_emb).square().mean()
    sigreg = torch.stack([
        SIGReg(emb, global_step=0)
        for emb in a_emb
    ]).mean()
    return (1 - lambd) * sim + lambd * sigreg

def test_the_loss_equals_the_guides_code_on_backbone_features():
    from sslmed.encoders import create_encoder
    from sslmed.methods import LeJEPA
    torch.manual_seed(0)
    enc = create_encoder("vit_tiny_patch16_224", 3, img_size=32, patch_size=8, depth=1, dynamic_img_size=True).eval()
    kw = json.loads(next(o for o in guide_overrides() if o.startswith("method_kw=")).split("=", 1)[1])
    kw["num_slices"] = 256                   # what the guide's LeJEPA_loss runs (SIGReg's default)
    m = LeJEPA(enc, **kw)
    views = [torch.rand(16, 3, 32, 32) for _ in range(2)] + [torch.rand(16, 3, 16, 16) for _ in range(6)]
    with torch.no_grad(): out = m(views, step=0)
    with torch.no_grad(): embs = [enc(v) for v in views]
    ref = LeJEPA_loss(embs[:2], embs, lambd=kw["lamb"])
    assert math.isclose(float(out["loss"]), float(ref), rel_tol=1e-4), (float(out["loss"]), float(ref))
    for e in embs[:3]:                       # the statistic alone, view by view
        assert math.isclose(float(m.sigreg(e, 0)), float(SIGReg(e, 0)), rel_tol=1e-4)

def test_cosine_per_step_is_within_1_6_percent_of_the_guides_per_epoch_staircase():
    epochs, per_epoch = 100, 50
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)   # the guide: one step per epoch
    gap = 0.0
    for e in range(epochs):
        guide = opt.param_groups[0]["lr"]
        for s in range(per_epoch): gap = max(gap, abs(guide - warmup_cosine(e * per_epoch + s, 0, epochs * per_epoch)))
        opt.step(); sched.step()
    assert gap <= math.pi / (2 * epochs) + 1e-9 and gap > 0.01, gap
    last = 0.5 * (1 + math.cos(math.pi * (epochs - 1) / epochs))
    assert math.isclose(last, 2.5e-4, rel_tol=0.02) and warmup_cosine(epochs * per_epoch, 0, epochs * per_epoch) == 0


def readme_command() -> list[str]:
    "The README's `sslmed train …` command line for the guide, as argv after `sslmed train`."
    import shlex
    cmd = re.search(r"From the command line: `(sslmed train .*?)`", README.read_text(), re.S).group(1)
    return shlex.split(" ".join(cmd.split()))[2:]

def test_readme_command_line_is_the_override_block():
    "The command line, parsed by `sslmed train`'s own parser (that of `python -m sslmed.train` too), gives the YAML block's config."
    from fastcore.script import anno_parser
    from sslmed.train import train
    a = anno_parser(train).parse_args(readme_command())
    assert (a.recipe, a.method, a.profile) == ("angio", "lejepa", "full")
    cfg = recipe(a.recipe, a.method, a.profile, a.set)
    assert cfg == recipe("angio", "lejepa", "full", guide_overrides())
    assert (cfg.lr, cfg.weight_decay, cfg.decay_1d) == (5e-4, 1e-2, True)  # YAML 1.1 alone would read 5e-4 as a string

def test_readme_command_line_trains(tmp_path):
    "The command line runs as it is written, on the smoke profile's 64² phantom (two small steps, crops that fit it)."
    import subprocess, sys
    argv = [a if a != "full" else "smoke" for a in readme_command()]
    small = ["steps=2", "batch_size=4", "data.n=8", "views.size=64", "views.local_size=32", "method_kw.num_slices=64", "log_every=1", f"out_dir={tmp_path / 'run'}", "progress=false"]
    out = subprocess.run([sys.executable, "-m", "sslmed.train", *argv, "--set", *small], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["steps"] == 2
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (saved["lr"], saved["weight_decay"], saved["views"]) == (5e-4, 1e-2, {"preset": "lejepa_guide", "size": 64, "local_size": 32})
