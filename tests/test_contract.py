"""The contract between params.yaml, dvc.yaml, stages/ and tuneline/.

- params.yaml validates against tuneline.params and every value carries a comment;
- every dvc.yaml stage has its module in stages/ and vice versa;
- each stage declares exactly the params sections its run() reads (by its typed signature);
- each stage's code deps are its module plus every tuneline module it imports, transitively
  (an undeclared module would leave stale outputs when it changes);
- data paths go through ${paths.*}; load_params() is called only in main(); stages never
  import each other; tuneline never imports stages, flows, prefect or dvc.
"""

from __future__ import annotations

import ast
import importlib
import re
import typing
from pathlib import Path

import pytest
import yaml

from tuneline.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
STAGE_FILES = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__")
SECTION_OF_TYPE = {field.annotation: name for name, field in Params.model_fields.items()}


def test_params_yaml_validates():
    load_params(ROOT / "params.yaml")


def test_every_params_value_has_a_comment():
    missing = []
    for i, line in enumerate((ROOT / "params.yaml").read_text().splitlines(), start=1):
        if re.match(r"^\s*(- )?[A-Za-z_][\w]*:\s*[^\s#]", line) and "#" not in line:
            missing.append(f"params.yaml:{i}: {line.strip()}")
    assert not missing, "every value needs a trailing comment (unit or trade-off):\n" + "\n".join(missing)


def test_every_stage_has_a_module_and_every_module_a_stage():
    assert sorted(DVC) == STAGE_FILES


def _imports(path: Path) -> set[str]:
    """Top-level module names imported by a file: 'tuneline.x', 'stages.y', 'prefect', ..."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            if node.module == "tuneline" or node.module.startswith("tuneline."):
                # `from tuneline.data.pii import engine`: engine may be a submodule (kept when it resolves to a file)
                out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _module_file(mod: str) -> Path | None:
    rel = Path(*mod.split("."))
    for cand in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if cand.exists():
            return cand
    return None


def tuneline_closure(path: Path) -> set[str]:
    """Files (repo-relative) of every tuneline module `path` imports, transitively."""
    seen: set[str] = set()
    todo = [path]
    while todo:
        for mod in _imports(todo.pop()):
            if not mod.startswith("tuneline.") or mod == "tuneline":
                continue
            f = _module_file(mod)
            if f is None:
                continue
            rel = f.relative_to(ROOT).as_posix()
            if rel not in seen:
                seen.add(rel)
                todo.append(f)
    return seen


@pytest.mark.parametrize("name", STAGE_FILES)
def test_stage_declares_the_params_sections_it_reads(name):
    run = importlib.import_module(f"stages.{name}").run
    hints = typing.get_type_hints(run)
    read = {SECTION_OF_TYPE[t] for k, t in hints.items() if k != "return" and t in SECTION_OF_TYPE}
    declared = set(DVC[name].get("params", []))
    assert read == declared, f"dvc.yaml stage {name!r} declares params {sorted(declared)}, run() reads {sorted(read)}"


@pytest.mark.parametrize("name", STAGE_FILES)
def test_stage_code_deps_are_its_module_and_its_tuneline_imports(name):
    deps = [d for d in DVC[name].get("deps", []) if isinstance(d, str)]
    code = {d for d in deps if d.startswith("tuneline/") and d.endswith(".py")}
    needed = tuneline_closure(ROOT / "stages" / f"{name}.py")
    assert f"stages/{name}.py" in deps
    assert needed <= code, f"stage {name!r} imports undeclared modules: {sorted(needed - code)}"
    assert code <= needed, f"stage {name!r} declares modules it never imports: {sorted(code - needed)}"


@pytest.mark.parametrize("name", STAGE_FILES)
def test_data_paths_use_paths_params(name):
    stage = DVC[name]
    entries = [d for d in stage.get("deps", []) if not d.startswith(("stages/", "tuneline/"))]
    for key in ("outs", "metrics", "plots"):
        for item in stage.get(key, []):
            entries.append(next(iter(item)) if isinstance(item, dict) else item)
    bad = [e for e in entries if not str(e).startswith("${paths.")]
    assert not bad, f"stage {name!r}: use ${{paths.*}} for {bad}"


@pytest.mark.parametrize("name", STAGE_FILES)
def test_stage_shape(name):
    src = (ROOT / "stages" / f"{name}.py").read_text()
    tree = ast.parse(src)
    assert ast.get_docstring(tree) and "Reads:" in ast.get_docstring(tree), f"{name}: docstring contract missing"
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "run" in funcs and "main" in funcs
    for fname, fn in funcs.items():
        calls = {c.func.id for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
        if fname != "main":
            assert "load_params" not in calls, f"stages/{name}.py:{fname} reads params.yaml; only main() may"
    others = {m for m in _imports(ROOT / "stages" / f"{name}.py") if m.startswith("stages")}
    assert not others, f"stages/{name}.py imports another stage: {others}"


def test_library_never_imports_stages_flows_prefect_or_dvc():
    bad = []
    for f in (ROOT / "tuneline").rglob("*.py"):
        for mod in _imports(f):
            if mod.split(".")[0] in {"stages", "flows", "prefect", "dvc"}:
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    assert not bad, bad
