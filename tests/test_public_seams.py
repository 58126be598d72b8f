"""Modules meet at public names: no module of ddm/, benchmarks/ or workflow/ imports a private
name (one leading underscore) of a ddm module, or reaches one through a ddm module or object it
imported (``from ddm import sampling; sampling._x``, ``HtFamily._x``). A name another module needs
is public where it is defined (with a docstring), or lives where it is used. And a public function
or class name of ddm/ is defined in one module only, so a reader who meets it knows which it is.

Read with ``ast`` (nothing is imported), so the whole check takes well under a second.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

#: The folders whose Python files are held to it (tests may reach into what they test).
CHECKED = ("ddm", "benchmarks", "workflow")
PACKAGE = "ddm"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` names, relative imports resolved against ``module``."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts[: len(parts) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def private_uses(source: str, module: str = "x", is_package: bool = False) -> list[str]:
    """``"line: what"`` for each private name of a ddm module that ``source`` imports or reaches
    through a name it imported from ddm."""
    tree = ast.parse(source)
    found, bound = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            origin = _absolute(node, module, is_package)
            if origin.split(".")[0] != PACKAGE:
                continue
            for a in node.names:
                if _private(a.name):
                    found.append(f"{node.lineno}: from {origin} import {a.name}")
                bound.add(a.asname or a.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_imports_a_private_name_of_another():
    offences = []
    for folder in CHECKED:
        for path in sorted((REPO / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(REPO)
            parts = list(rel.with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            module = ".".join(parts[:-1] if is_package else parts)
            offences += [f"{rel}:{use}" for use in private_uses(path.read_text(), module, is_package)]
    assert not offences, ("private names used across modules (make the name public where it is defined, "
                          "with a docstring, or move it to where it is used):\n" + "\n".join(offences))


#: Public names that several modules of ddm/ define today, each with why; the list may only shrink.
SHARED_NAMES = {
    "main": {"ddm/cli.py", "ddm/plan.py"},  # each runnable module's entry point (python -m ddm, -m ddm.plan)
    "load": {"ddm/plugins.py", "ddm/snapshot.py"},
    "train": {"ddm/jobcost.py", "ddm/training/trainer.py"},  # jobcost: the cost model of the rule `train`
    "train_autoencoder": {"ddm/autoencoder.py", "ddm/jobcost.py"},  # ... of the rule `train_autoencoder`
}


def test_each_public_name_is_defined_in_one_module():
    homes: dict[str, set[str]] = {}
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                homes.setdefault(node.name, set()).add(path.relative_to(REPO).as_posix())
    several = {name: where for name, where in homes.items() if len(where) > 1}
    grown = {name: sorted(where) for name, where in several.items() if not where <= SHARED_NAMES.get(name, set())}
    assert not grown, f"public names defined in several modules (one home, or distinct names): {grown}"


def test_the_check_sees_each_kind_of_private_use():
    src = """
from ddm.sampling import _check_n, uniform_grid
from ddm import sampling as S
from .tables import _env as env
import ddm.report.tables
from ddm.families import HtFamily
from other import _fine
S._times(1)
ddm.report.tables._env()
HtFamily._t
uniform_grid.__name__
"""
    uses = sorted(private_uses(src, "ddm.report.pdf"), key=lambda u: int(u.split(":")[0]))
    assert uses == ["2: from ddm.sampling import _check_n", "4: from ddm.report.tables import _env",
                    "8: S._times", "9: ddm.report.tables._env", "10: HtFamily._t"], uses
    assert private_uses("from ddm.sampling import check_steps\nimport os\nos._exit\n") == []


def test_plugin_authors_call_public_family_methods():
    """The README's plug-in family uses only public methods of HtFamily (t_like, check_free)."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("# my_plugin.py", 1)[1].split("```", 1)[0]
    assert "self.t_like(" in block and "self.check_free(" in block
    assert not [a for a in ("self._t(", "self._check_free(") if a in block]
    from ddm.families import HtFamily

    assert HtFamily.t_like.__doc__ and HtFamily.check_free.__doc__
