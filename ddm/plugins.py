"""Plug-ins: the user's own code, imported by every job before params.yaml is validated, so that an
h_t family, a sampler, a time grid, a loss weighting, an FID extractor or a dataset of one's own
is one file outside the package and one params.yaml entry (issue 24, item 4).

``plugins:`` in params.yaml lists them, in import order; each entry is

* a module name importable from ``PYTHONPATH`` (``my_lab.ddm_extras``), imported with
  :func:`importlib.import_module`; or
* a path to a ``.py`` file (an entry ending in ``.py`` or holding a ``/``), relative to the params
  file's folder (the project root for params.yaml) unless absolute, imported with
  :func:`importlib.util.spec_from_file_location` under a name made of its stem and the digest of
  its real path (``ddm_plugin_<stem>_<8 hex>``), which stays the same for the file wherever it is
  named from.

Packages installed with an entry point in the group ``ddm.plugins`` (:data:`ENTRY_POINT_GROUP`,
:mod:`importlib.metadata`) are imported too, once per process, before the listed ones.

A plug-in is imported once per process: a second :func:`load` of the same entry (the ``ddm`` CLI
and ``ddm.validation.load_params`` both load them; the Snakefile and ``python -m ddm.plan``) finds it
in ``sys.modules`` and does not run it again, so nothing registers twice (the registries refuse a
name given twice). A plug-in that cannot be imported is a :class:`ddm.yamlio.ConfigError` of one
line naming the entry, the file, the error and the fix (``ddm``: exit code 2; the Snakefile: a
WorkflowError). Who loads them: ``ddm.cli.main`` (every subcommand, from its ``--params`` file),
``ddm.validation.load_params``, the Snakefile (before it validates the config) and ``ddm.plan``.

Plug-in files are code inputs of the pipeline: :func:`files` lists those imported in this process
and :func:`with_code` folds their bytes into each subcommand's code digest (``ddm.codedeps``), so
a changed plug-in reruns the jobs (the Snakefile's ``code`` params); workflow/make_dvc_yaml.py lists
the plug-in files of params.yaml as deps of every stage.

Standard library only (the Snakefile imports this at parse time; what a plug-in imports is its own).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterable, Mapping

from ddm.yamlio import ConfigError, read_yaml

__all__ = ["ENTRY_POINT_GROUP", "is_file_entry", "module_name", "load", "load_from", "absolute", "files",
           "with_code"]

#: The entry-point group of installed plug-ins (``[project.entry-points."ddm.plugins"]``).
ENTRY_POINT_GROUP = "ddm.plugins"

#: entry (as resolved: module name or real file path) -> the imported module, in import order.
_LOADED: dict[str, ModuleType] = {}
_ENTRY_POINTS_DONE = False


def is_file_entry(entry: str) -> bool:
    """A ``plugins:`` entry that names a file (ends in ``.py`` or holds a path separator)."""
    return entry.endswith(".py") or "/" in entry or os.sep in entry


def module_name(path: Path) -> str:
    """The stable module name of a plug-in file: its stem and the digest of its real path."""
    real = str(Path(path).resolve())
    stem = "".join(c if c.isalnum() else "_" for c in Path(real).stem)
    return f"ddm_plugin_{stem}_{hashlib.sha256(real.encode()).hexdigest()[:8]}"


def absolute(entries: Iterable[str], base: str | os.PathLike) -> list[str]:
    """The entries with each file entry made an absolute path (relative ones against ``base``):
    what a job reads when its params file lies elsewhere (the Snakefile's merged config)."""
    return [str((Path(base) / e).resolve()) if isinstance(e, str) and is_file_entry(e) else e for e in entries]


#: What an import of a plug-in may raise and still be one refusal: any error, and ``SystemExit`` (a
#: plug-in that calls ``sys.exit()`` at import would otherwise end the Snakefile or ``ddm`` silently,
#: with exit code 0 for ``sys.exit(0)``). ``KeyboardInterrupt`` passes.
IMPORT_ERRORS = (Exception, SystemExit)


def _fail(entry: str, where: str, error: BaseException | str, source: str) -> ConfigError:
    if isinstance(error, SystemExit):
        why = f"it calls sys.exit({error.code!r}) at import, which would end the run"
    else:
        why = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    why = " ".join(str(why).split())  # one line, whatever the plug-in's error looks like
    return ConfigError(f"{source}: plugins: '{entry}' ({where}) cannot be imported: {why}; fix the plug-in, "
                       f"or remove it from plugins")


def _import_file(entry: str, path: Path, source: str) -> ModuleType:
    if not path.is_file():
        raise _fail(entry, str(path), "no such file (a file entry is relative to the params file's folder)", source)
    name = module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise _fail(entry, str(path), "not a Python source file", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as import does: the module may refer to itself (dataclasses, pickle)
    try:
        spec.loader.exec_module(module)
    except IMPORT_ERRORS as e:
        del sys.modules[name]
        raise _fail(entry, str(path), e, source) from e
    return module


def _import_module(entry: str, source: str) -> ModuleType:
    try:
        return importlib.import_module(entry)
    except IMPORT_ERRORS as e:
        spec = None
        try:
            spec = importlib.util.find_spec(entry)
        except (ImportError, ValueError):
            pass
        where = spec.origin if spec is not None and spec.origin else "a module on PYTHONPATH"
        raise _fail(entry, where, e, source) from e


def _entry_points(source: str) -> None:
    """Import the installed plug-ins of :data:`ENTRY_POINT_GROUP`, once per process."""
    global _ENTRY_POINTS_DONE
    if _ENTRY_POINTS_DONE:
        return
    _ENTRY_POINTS_DONE = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except IMPORT_ERRORS as e:
            raise _fail(f"entry point {ep.name} = {ep.value}", ep.group, e, source) from e
        module = obj if isinstance(obj, ModuleType) else sys.modules.get(getattr(obj, "__module__", ""))
        if module is not None:
            _LOADED.setdefault(ep.value, module)


def load(entries: Iterable[str] | None, base: str | os.PathLike = ".", source: str = "params.yaml") -> list[str]:
    """Import the plug-ins ``entries`` (``plugins:`` of the params file ``source``, whose folder is
    ``base``) and the installed entry-point plug-ins, each once per process; return the entries
    with file entries made absolute (:func:`absolute`). A bad entry is a one-line ConfigError."""
    if isinstance(entries, (str, Mapping)) or not isinstance(entries or [], Iterable):
        raise ConfigError(f"{source}: plugins: {entries!r} is not a list; write e.g. plugins: [my_plugin.py]")
    entries = list(entries or [])
    _entry_points(source)
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise ConfigError(f"{source}: plugins: {entry!r} is not a module name or a .py file path; "
                              "write e.g. plugins: [my_plugin.py]")
        if is_file_entry(entry):
            path = (Path(base) / entry).expanduser().resolve()
            _LOADED.setdefault(str(path), _import_file(entry, path, source))
        elif entry not in _LOADED:
            _LOADED[entry] = _import_module(entry, source)
    return absolute(entries, base)


def load_from(path: str | os.PathLike) -> list[str]:
    """:func:`load` the ``plugins:`` of the params file ``path`` (its folder the base). A file that
    is missing or cannot be read loads nothing: whoever validates it reports that."""
    try:
        params = read_yaml(path)
    except (OSError, ConfigError):
        return []
    if not isinstance(params, Mapping) or not params.get("plugins"):
        return []
    return load(params["plugins"], Path(path).resolve().parent, str(path))


def files() -> list[Path]:
    """The source files of the plug-ins imported in this process (a package plug-in: every ``.py``
    file under its folder), sorted."""
    out = set()
    for module in _LOADED.values():
        origin = getattr(module, "__file__", None)
        if not origin:
            continue
        origin = Path(origin).resolve()
        if origin.name == "__init__.py":
            out.update(p.resolve() for p in origin.parent.rglob("*.py") if "__pycache__" not in p.parts)
        else:
            out.add(origin)
    return sorted(out)


def with_code(digests: Mapping[str, str]) -> dict[str, str]:
    """Each subcommand's code digest (``ddm.codedeps``) with the bytes of the plug-in files folded
    in (16 hex digits, as codedeps'); unchanged when no plug-in is imported, so a project without
    plug-ins keeps its digests."""
    paths = files()
    if not paths:
        return dict(digests)
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.name}\0".encode() + hashlib.sha256(p.read_bytes()).digest())
    extra = h.hexdigest()
    return {k: hashlib.sha256(f"{v}\0{extra}".encode()).hexdigest()[:16] for k, v in digests.items()}
