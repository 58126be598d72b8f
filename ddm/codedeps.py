"""Which package code each ``ddm`` subcommand runs, and a digest of it: code as an input of the
pipeline's jobs.

A rule of the Snakemake graph runs one subcommand (``ddm sample``, ``ddm train``, ...). Its jobs
must rerun when the code that subcommand runs changes, and only then: a fixed sampler reruns the
sample jobs and everything downstream of them, not the training. Read statically, with
:mod:`ast` (nothing is imported, no torch):

* the command line's modules, ``ddm/cli.py`` and ``ddm/cli_*.py`` (:func:`cli_modules`), read
  part by part: the subcommand's handler (registered in one of them as ``add_command(sub, "<name>",
  <handler>, ...)``), ``main``, the functions and classes of those modules they refer to
  (transitively, across the modules), cli.py's module-level statements and those of another
  cli module that bind a name its parts use (a task handler's module-level imports count for
  the task's subcommands, not for Table 1's); the modules these parts import are the entry
  modules (no other module imports a cli module);
* the modules the code that runs imports, transitively: of a module, what runs once it is
  imported is every top-level statement but a function definition (so its module-level imports
  count), and each top-level function whose name code that runs mentions (its function-level
  imports count then), every class whole (:func:`command_modules` states the rule); so ``ddm
  prepare-task``, which imports the task module but never calls its training helpers, does not
  count the trainer; the package's ``__init__.py``, always;
* the package data files (``ddm/resources.py``: ``NAME = DATA / "file"``) whose constant one of
  those modules names.

:func:`code_digest` hashes the modules' syntax trees without docstrings (a comment, blank-line or
docstring edit changes no digest) and the data files' bytes. The Snakefile gives each rule its
subcommand's digest as a param (Snakemake reruns a job whose params changed; ``ddm.codecache``
keeps the digests between starts, keyed on the files' content); dvc.yaml lists each phase's files
as deps (workflow/make_dvc_yaml.py, :func:`command_files`), so ``dvc status`` names the same stale
phases.

Standard library only: the Snakefile imports this at parse time.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
from pathlib import Path

__all__ = ["package_dir", "package_files", "cli_modules", "commands", "command_modules", "command_files",
           "code_digest", "code_digests"]

#: The package's name (its folder's name).
PACKAGE = "ddm"
#: The command line's main module (``main``, the parser); its ``cli_*`` siblings are read as it is.
CLI = f"{PACKAGE}.cli"


def package_dir(cwd: str | os.PathLike | None = None) -> Path:
    """The ``ddm`` package a ``python -m ddm`` started in ``cwd`` runs: ``cwd/ddm`` when that is a
    package (the current directory comes first on ``sys.path``), else this installed package."""
    here = Path(cwd if cwd is not None else os.getcwd()) / PACKAGE
    if (here / "__init__.py").is_file():
        return here.resolve()
    return Path(__file__).resolve().parent


def _module_name(pkg: Path, path: Path) -> str:
    rel = path.relative_to(pkg).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(pkg: Path) -> dict[str, Path]:
    """Module name -> file of every module in the package (``__pycache__`` skipped)."""
    return {_module_name(pkg, p): p for p in sorted(pkg.rglob("*.py")) if "__pycache__" not in p.parts}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module an imported dotted name lives in (its longest known prefix)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


#: An import whose line carries this comment is not an edge: the module reads only names from
#: it (the registries' snapshot that validates params.yaml, whatever of which reaches a job reaches
#: it through the resolved config, which every rule carries as a param of its own; the option
#: defaults of a subcommand whose handler imports that module itself, as `ddm compare`'s).
NAMES_ONLY = "codedeps: names only"


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _walk(node: ast.AST):
    """:func:`ast.walk` without the bodies of ``if TYPE_CHECKING:`` (they never run)."""
    todo = [node]
    while todo:
        n = todo.pop()
        yield n
        todo += n.orelse if _is_type_checking(n) else ast.iter_child_nodes(n)


def _imports(tree: ast.AST, module: str, modules: dict[str, Path], is_pkg: bool, lines=()) -> set[str]:
    """The package modules a syntax tree imports, anywhere it may run (module level, in functions;
    not under ``if TYPE_CHECKING:``, nor on a line marked :data:`NAMES_ONLY`). ``from ddm import
    x`` counts ``ddm.x`` when x is a module; a relative import is resolved against ``module``."""
    found = set()
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_pkg else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        if any(NAMES_ONLY in line for line in lines[node.lineno - 1: node.end_lineno]):
            continue
        found |= {m for m in (_resolve(n, modules) for n in names if n.split(".")[0] == PACKAGE) if m}
    return found


@functools.lru_cache(maxsize=8)
def _graph(pkg: Path, stamp: tuple) -> tuple[dict[str, Path], dict[str, ast.Module], dict[str, list[str]]]:
    """Module -> file, syntax tree and source lines, of every module of the package."""
    modules = _modules(pkg)
    source = {m: p.read_text() for m, p in modules.items()}
    trees = {m: ast.parse(text, filename=str(modules[m])) for m, text in source.items()}
    return modules, trees, {m: text.splitlines() for m, text in source.items()}


def package_files(pkg: Path) -> list[Path]:
    """Every file of the package (``__pycache__`` aside), sorted."""
    return [p for p in sorted(pkg.rglob("*")) if "__pycache__" not in p.parts and p.is_file()]


def _stamp(pkg: Path) -> tuple:
    """(path, mtime, ctime, size) of every file of the package: the in-process memo's key."""
    return tuple((str(p), st.st_mtime_ns, st.st_ctime_ns, st.st_size) for p in package_files(pkg) for st in [p.stat()])


def _load(pkg: Path | None):
    pkg = Path(pkg).resolve() if pkg is not None else package_dir()
    return (pkg, *_graph(pkg, _stamp(pkg)))


def cli_modules(modules: dict) -> list[str]:
    """The command line's modules, read part by part: ``ddm.cli`` (``main``, the parser) and each
    ``ddm.cli_<x>`` (more subcommands, the helpers they share), sorted."""
    return sorted(m for m in modules if m == CLI or m.startswith(f"{CLI}_"))


def _handlers(tree: ast.Module) -> dict[str, str]:
    """Subcommand -> handler function name, from a module's ``add_command(sub, "<name>", <handler>, ...)``."""
    found = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "add_command"
                and len(node.args) >= 3 and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[2], ast.Name)):
            found[node.args[1].value] = node.args[2].id
    return found


def _all_handlers(modules: dict, trees: dict) -> dict[str, str]:
    """Subcommand -> handler function name, over the cli modules."""
    return {c: h for m in cli_modules(modules) for c, h in _handlers(trees[m]).items()}


def commands(pkg: str | os.PathLike | None = None) -> list[str]:
    """Every ``ddm`` subcommand, sorted."""
    _, modules, trees, _ = _load(pkg)
    return sorted(_all_handlers(modules, trees))


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _binds(node: ast.stmt) -> set[str]:
    """The names a module-level statement binds (none: a statement run for its effect)."""
    if isinstance(node, ast.ImportFrom) and node.module == "__future__":
        return set()
    names = {(a.asname or a.name.split(".")[0]) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))
             for a in n.names}
    return names | {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} | {
        n.name for n in ast.walk(node) if isinstance(n, _DEFS)}


def _cli_parts(command: str, modules: dict, trees: dict) -> dict[str, list[ast.stmt]]:
    """What ``ddm <command>`` runs of each cli module (:func:`cli_modules`): cli.py's module-level
    statements, ``main`` (the parser: options and their defaults) and the subcommand's handler,
    with the functions and classes of the cli modules they refer to, transitively, and the
    module-level statements of another cli module that bind a name its parts use (or none: a
    statement run for its effect; a docstring aside); never another subcommand's handler."""
    handlers = _all_handlers(modules, trees)
    if command not in handlers:
        raise KeyError(f"`ddm {command}` is not a subcommand of ddm/cli.py or ddm/cli_*.py; known: "
                       f"{', '.join(sorted(handlers))}")
    clis = cli_modules(modules)
    functions = {}  # name -> (module, node): one name in one place
    for m in clis:
        for n in trees[m].body:
            if isinstance(n, _DEFS):
                if n.name in functions:
                    raise ValueError(f"{n.name} is defined in both {functions[n.name][0]} and {m}: ddm.codedeps "
                                     "needs one name in one place among the cli modules")
                functions[n.name] = (m, n)
    others = set(handlers.values()) - {handlers[command]}
    chosen = {id(n) for n in trees[CLI].body if not isinstance(n, _DEFS)}
    used = {m: set() for m in clis}  # names the chosen parts of each module mention
    todo = [handlers[command], "main", *(n.id for s in trees[CLI].body if not isinstance(s, _DEFS)
                                         for n in ast.walk(s) if isinstance(n, ast.Name))]
    grown = True
    while grown:
        while todo:
            name = todo.pop()
            if name not in functions or name in others or id(functions[name][1]) in chosen:
                continue
            m, node = functions[name]
            chosen.add(id(node))
            used[m] |= _mentions(node)
            todo += [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in functions]
        grown = False
        for m in (m for m in clis if m != CLI):
            for s in trees[m].body:
                if isinstance(s, _DEFS) or id(s) in chosen or (
                        isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)):
                    continue
                bound = _binds(s)
                if not bound or bound & used[m]:
                    chosen.add(id(s))
                    used[m] |= _mentions(s)
                    todo += [n.id for n in ast.walk(s) if isinstance(n, ast.Name) and n.id in functions]
                    grown = True
    return {m: [n for n in trees[m].body if id(n) in chosen] for m in clis}


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _runs(stmt: ast.stmt, names: set) -> bool:
    """Whether a top-level statement of a (non-cli) module may run once its module is imported:
    every statement but a plain function definition whose name no code reached so far mentions. A
    class counts whole (its body runs at import, and ``__init_subclass__`` or a registry may reach
    it by no name); a decorated function too (its decorator may register it), and one whose default
    values are not constants (they are computed at import)."""
    if not isinstance(stmt, _FUNCTIONS) or stmt.decorator_list or stmt.name in names:
        return True
    return not all(isinstance(d, ast.Constant) for d in stmt.args.defaults + [d for d in stmt.args.kw_defaults if d])


def command_modules(command: str, pkg: str | os.PathLike | None = None) -> list[str]:
    """The package modules ``ddm <command>`` may run, sorted: ``ddm``, ``ddm.__main__``, the cli
    modules it runs parts of (of which the digest counts only those parts) and the modules that
    the code it runs imports, transitively, with the ``__init__`` of each subpackage on the way.

    The rule, what a subcommand runs rather than all it could import: a module counts once an
    import in code that runs reaches it; of its code, what runs is every top-level statement but a
    function definition (module-level imports run at import) and each top-level function whose
    name code that runs mentions (a call, an attribute, an import of it), so a function-level
    import counts when its function can be called. A name is matched in every module (a method
    called on an object matches every function of that name): when unsure, a module counts."""
    _, modules, trees, lines = _load(pkg)
    clis, parts = set(cli_modules(modules)), _cli_parts(command, modules, trees)
    closure = {*(m for m, p in parts.items() if p or m == CLI), f"{PACKAGE}.__main__"}
    names, done, todo = set(), set(), [PACKAGE]
    for m, p in parts.items():
        body = ast.Module(body=p, type_ignores=[])
        todo += _imports(body, m, modules, False, lines[m])
        names |= _mentions(body)
    grown = True
    while grown:  # until no more code runs: a new module, or a function a new name reaches
        while todo:
            m = todo.pop()
            if m not in closure and m in modules:
                closure.add(m)
                todo += [".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)]  # ddm.a runs first
        grown = False
        for m in sorted(m for m in closure - clis if m in modules):
            for stmt in (s for s in trees[m].body if id(s) not in done and _runs(s, names)):
                done.add(id(stmt))
                body = ast.Module(body=[stmt], type_ignores=[])
                todo += _imports(body, m, modules, modules[m].name == "__init__.py", lines[m])
                names |= _mentions(body)
                grown = True
    return sorted(m for m in closure if m in modules)


def _data_files(pkg: Path, modules: dict, trees: dict, command: str) -> list[Path]:
    """The package data files (``ddm/resources.py``'s ``NAME = DATA / "file"`` constants) whose
    name ``ddm <command>``'s modules mention (of cli.py: the parts it runs)."""
    res = trees.get(f"{PACKAGE}.resources")
    if res is None:
        return []
    folders, files = {}, {}
    for node in res.body:  # NAME = files("ddm") / "data"  or  NAME = FOLDER / "file"
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            v, name = node.value, node.targets[0].id
            if isinstance(v, ast.BinOp) and isinstance(v.op, ast.Div) and isinstance(v.right, ast.Constant):
                if isinstance(v.left, ast.Name) and v.left.id in folders:
                    files[name] = folders[v.left.id] / v.right.value
                else:
                    folders[name] = pkg / v.right.value
    mentioned, clis = _names(pkg, _stamp(pkg)), set(cli_modules(modules))
    names = set().union(*(mentioned[m] for m in command_modules(command, pkg)
                          if m not in clis and m != f"{PACKAGE}.resources"))
    for parts in _cli_parts(command, modules, trees).values():
        names |= _mentions(ast.Module(body=parts, type_ignores=[]))
    return sorted(p for name, p in files.items() if name in names and p.is_file())


def command_files(command: str, pkg: str | os.PathLike | None = None) -> list[str]:
    """The files ``ddm <command>`` runs or reads from the package: its modules and data files,
    as paths relative to the package's parent folder (``ddm/sampling.py``), sorted."""
    root, modules, trees, _ = _load(pkg)
    paths = [modules[m] for m in command_modules(command, root)] + _data_files(root, modules, trees, command)
    return sorted(p.relative_to(root.parent).as_posix() for p in paths)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=8)
def _node_digests(pkg: Path, stamp: tuple) -> dict[str, dict[int, str]]:
    """Module -> {id of a top-level statement of its analysed tree: digest of that statement's
    docstring-free syntax tree} (the module's own docstring does not count)."""
    modules, trees, _ = _graph(pkg, stamp)
    out = {}
    for m, t in trees.items():
        plain = ast.parse(modules[m].read_bytes())  # a second tree, stripped: its statements pair
        doc = int(ast.get_docstring(plain, clean=False) is not None)  # with t's after the docstring
        _strip_docstrings(plain)
        out[m] = {id(n): hashlib.sha256(ast.dump(s).encode()).hexdigest() for n, s in zip(t.body[doc:], plain.body)}
    return out


@functools.lru_cache(maxsize=8)
def _names(pkg: Path, stamp: tuple) -> dict[str, frozenset]:
    """Module -> every name it mentions (names, attributes, imported names)."""
    _, trees, _ = _graph(pkg, stamp)
    return {m: _mentions(t) for m, t in trees.items()}


def _mentions(tree: ast.AST) -> frozenset:
    return frozenset(n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else n.name
                     for n in ast.walk(tree) if isinstance(n, (ast.Name, ast.Attribute, ast.alias)))


def code_digest(command: str, pkg: str | os.PathLike | None = None) -> str:
    """sha256 (hex, 16 digits) of what ``ddm <command>`` runs: the syntax tree without docstrings
    (:func:`ast.dump`: comments, blank lines and docstrings do not count) of each of its modules
    (of cli.py, only the parts it runs: :func:`command_modules`) and the bytes of each data file
    it names, in sorted order."""
    root, modules, trees, _ = _load(pkg)
    nodes = _node_digests(root, _stamp(root))
    used = command_modules(command, root)
    cli_parts = _cli_parts(command, modules, trees)
    h = hashlib.sha256()
    for m in used:
        if m in cli_parts:
            parts = {id(n) for n in cli_parts[m]}
            digests = [d for i, d in nodes[m].items() if i in parts]
        else:
            digests = list(nodes[m].values())
        h.update(f"{m}\0{''.join(digests)}\0".encode())
    for p in _data_files(root, modules, trees, command):
        h.update(f"{p.relative_to(root).as_posix()}\0".encode() + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:16]


def code_digests(pkg: str | os.PathLike | None = None) -> dict[str, str]:
    """:func:`code_digest` of every subcommand."""
    return {c: code_digest(c, pkg) for c in commands(pkg)}
