"""The layout's rules, checked: notebooks import only from lower-numbered notebooks, modules form no import cycle, only
public names cross modules, and nothing domain-specific lives outside `sslmed/domains/`."""
import ast, json, re
from pathlib import Path
from conftest import ROOT

NBS, LIB = ROOT / "nbs", ROOT / "sslmed"


def library_notebooks():
    return sorted(p for p in NBS.rglob("*.ipynb") if "experiments" not in p.parts and re.match(r"\d+_", p.name))


def number(p: Path) -> int: return int(re.match(r"(\d+)_", p.name).group(1))


def code_cells(p: Path):
    return ["".join(c["source"]) for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "code"]


def notebook_module(p: Path) -> str:
    for s in code_cells(p):
        if m := re.search(r"^#\|\s*default_exp\s+(\S+)", s, re.M): return "sslmed." + m.group(1)


def sslmed_imports(text: str) -> set[str]:
    "Modules of sslmed named in `from sslmed.x import …` / `import sslmed.x` lines."
    return set(re.findall(r"^\s*from\s+(sslmed(?:\.\w+)*)\s+import", text, re.M)) | \
           set(re.findall(r"^\s*import\s+(sslmed(?:\.\w+)+)", text, re.M))


def test_every_notebook_imports_only_from_lower_numbers():
    home = {notebook_module(p): p for p in library_notebooks()}
    home = {m: p for m, p in home.items() if m}
    bad = []
    for p in library_notebooks():
        for mod in sslmed_imports("\n".join(code_cells(p))):
            if mod in ("sslmed", "sslmed.all", "sslmed.domains", "sslmed.data"): continue  # packages, not notebooks
            src = home.get(mod) or home.get(mod.rsplit(".", 1)[0])
            assert src is not None, f"{p.name} imports {mod}, which no notebook exports"
            if src != p and number(src) >= number(p): bad.append(f"{p.relative_to(NBS)} imports {mod} ({src.relative_to(NBS)})")
    assert not bad, "imports from a later (or equal) notebook:\n" + "\n".join(bad)


def module_graph() -> dict[str, set[str]]:
    "Every generated module and the sslmed modules it imports (function-level imports included)."
    g = {}
    for f in LIB.rglob("*.py"):
        mod = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = mod.split(".")[:len(mod.split(".")) - node.level] if node.level else []
                name = ".".join(base + ([node.module] if node.module else []))
                if name.startswith("sslmed"): deps.add(name)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("sslmed.")}
        g[mod] = deps - {mod}
    return g


def test_no_import_cycles():
    g, state, cycles = module_graph(), {}, []
    def visit(m, path):
        state[m] = 1
        for d in g.get(m, ()):
            if state.get(d) == 1: cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d in g and not state.get(d): visit(d, path + [d])
        state[m] = 2
    for m in g:
        if not state.get(m): visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_only_public_names_cross_modules():
    bad = []
    for p in library_notebooks():
        for s in code_cells(p):
            for mod, names in re.findall(r"^\s*from\s+(sslmed[\w.]*)\s+import\s+\(?([^\n)]*)", s, re.M):
                bad += [f"{p.name}: from {mod} import {n.strip()}" for n in names.split(",") if n.strip().startswith("_")]
    assert not bad, "\n".join(bad)


def test_nothing_domain_specific_outside_the_domain_modules():
    "Names a domain module defines, and the domains' own names as strings, appear in no other library module."
    import importlib
    from sslmed.domain import list_domains
    domains = list_domains()
    specific = set(domains)
    for d in domains: specific |= set(importlib.import_module(f"sslmed.domains.{d}").__all__) - {"DOMAIN"}
    found = []
    for f in LIB.rglob("*.py"):
        rel = f.relative_to(LIB)
        mod = "sslmed." + ".".join(rel.with_suffix("").parts)
        if rel.parts[0] == "domains" or f.name == "_modidx.py": continue
        tree = ast.parse(f.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
                and n.body and isinstance(n.body[0], ast.Expr)}
        for n in ast.walk(tree):
            if id(n) in docs: continue
            name = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else \
                   n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) else None
            if name in specific: found.append(f"{rel}:{n.lineno} {name}")
    assert not found, "domain-specific names outside sslmed/domains/:\n" + "\n".join(sorted(set(found)))
