"""Every row of every parity table (data_cards/*.md, recipes/README.md) is settled — 'same' or 'different' with its reason — and
what a row names is real: each `sslmed.<module>.<name>` it cites resolves, and each command line it gives (`sslmed <cmd> …`,
`python -m sslmed.train …`) is run with --help and accepts every option the row spells."""
import importlib, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
CARDS = sorted((ROOT / "data_cards").glob("*.md")) + [ROOT / "recipes" / "README.md"]

def parity_tables():
    "(file, header, rows) of each table under a 'Parity' heading or inside a parity:start block."
    out = []
    for f in CARDS:
        for sec in re.split(r"\n(?=#+ )", f.read_text()):
            if "arity" not in sec.split("\n", 1)[0] and "parity:start" not in sec: continue
            lines = [l for l in sec.splitlines() if l.startswith("|")]
            if len(lines) < 3: continue
            cells = lambda l: [c.strip() for c in l.strip().strip("|").split("|")]
            header = [c.lower() for c in cells(lines[0])]
            verdict = next((i for i, h in enumerate(header) if "same" in h or h == "parity"), None)
            if verdict is not None: out.append((f.name, verdict, [cells(l) for l in lines[2:]]))
    return out

TABLES = parity_tables()

def test_five_seed_tables_found():
    assert {f for f, _, _ in TABLES} >= {"arcade.md", "mimic_iv_ecg.md", "aptos2019.md", "neuro_studies.md", "README.md"}

@pytest.mark.parametrize("name,verdict,rows", TABLES, ids=[t[0] for t in TABLES])
def test_every_row_is_same_or_different_with_a_reason(name, verdict, rows):
    for r in rows:
        v = r[verdict]
        assert v.startswith(("same", "different")), f"{name}: row {r[0]!r} is {v!r}, not 'same' or 'different'"
        if v.startswith("different"):
            reason = v[len("different"):].strip(" :()—-") or " ".join(r[verdict + 1:]).strip()
            assert reason, f"{name}: row {r[0]!r} is different without a reason"

def resolves(dotted: str) -> bool:
    "Whether `sslmed.a.b.c` names a module or an attribute of one."
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try: obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError: continue
        for p in parts[i:]:
            if not hasattr(obj, p): return False
            obj = getattr(obj, p)
        return True
    return False

def spans(rows, col_from: int = 1):
    "The code spans of the sslmed side of the rows (every column after the seed's)."
    return [s for r in rows for c in r[col_from:] for s in re.findall(r"`([^`]+)`", c)]

@pytest.mark.parametrize("name,verdict,rows", TABLES, ids=[t[0] for t in TABLES])
def test_every_cited_name_resolves(name, verdict, rows):
    names = {m for s in spans(rows) for m in re.findall(r"\bsslmed(?:\.\w+)+", s) if not s.startswith(("sslmed ", "python "))}
    bad = sorted(n for n in names if not resolves(n))
    assert not bad, f"{name}: cited names that do not exist: {bad}"

def commands():
    "Each distinct command line the tables give, with the entry point it runs."
    out = {}
    for name, _, rows in TABLES:
        for s in spans(rows):
            m = re.match(r"(?:sslmed (?P<sub>[a-z-]+)|python -m (?P<mod>sslmed\.train))\b(?P<rest>.*)", s)
            if m: out.setdefault((m["sub"] or "", m["mod"] or ""), set()).update(re.findall(r"(--[a-z][a-z-]*)", m["rest"]))
    return sorted((k, sorted(v)) for k, v in out.items())

@pytest.mark.parametrize("entry,flags", commands(), ids=lambda x: str(x))
def test_every_command_line_runs_and_takes_its_options(entry, flags):
    sub, mod = entry
    argv = [sys.executable, "-m", mod, "--help"] if mod else [sys.executable, "-m", "sslmed", sub, "--help"]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, (argv, p.stderr[-2000:])
    for f in flags:
        assert f in p.stdout or f.replace("-", "_") in p.stdout, f"{' '.join(argv)}: no option {f}"
