"""Reading params files: YAML with one-line errors that name the file and the line.

``read_yaml`` is the one reader of params.yaml, a ``--params`` file and each ``--configfile``: a
syntax error names its line and column, and a key given twice in one mapping (YAML would keep the
last one silently) names both lines. ``read_yaml_lines`` also returns the line of every key, so a
check of the merged config can name the file and line that set a value (``ConfigLayer``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import yaml

__all__ = ["PREFIX", "ConfigError", "ConfigLayer", "read_yaml", "read_yaml_lines", "config_layers", "name_source",
           "nonfinite_lines"]

_MERGE = "tag:yaml.org,2002:merge"
#: How every message about a params value starts (``ddm.validation``); ``name_source`` puts the file
#: actually read in its place.
PREFIX = "params.yaml: "


class ConfigError(ValueError):
    """params.yaml does not satisfy its schema, or names something that does not exist."""


class ConfigLayer(NamedTuple):
    """One source of a merged config: its name (a file, or ``--config``), its content and the line
    of each key (a tuple of keys -> line number, 1-based; empty where there is no file)."""

    name: str
    data: Any
    lines: Mapping[tuple, int]


def _key_lines(loader: yaml.SafeLoader, node, path: tuple, out: dict, where: str) -> None:
    """Fill ``out`` with the line of every mapping key under ``node``; a key given twice in one
    mapping is a ConfigError naming both lines."""
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _key_lines(loader, item, path + (i,), out, where)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    first: dict = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE:  # `<<: *anchor`: merged keys may be overridden, as YAML says
            continue
        try:
            key = loader.construct_object(key_node, deep=True)
            hash(key)
        except (yaml.YAMLError, TypeError):
            continue  # the constructor reports an unusable key itself
        line = key_node.start_mark.line + 1
        if key in first:
            at = "/".join(map(str, path)) or "the top level"
            raise ConfigError(f"{where}:{line}: duplicate key '{key}' in {at} (first at line {first[key]}): "
                              f"YAML would keep the last one silently; keep one of them")
        first[key] = line
        out[path + (key,)] = line
        _key_lines(loader, value_node, path + (key,), out, where)


def _syntax_error(path: Path, e: yaml.YAMLError) -> ConfigError:
    mark = getattr(e, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and start and mark and start.line != mark.line:
        context += f" that starts at line {start.line + 1}"
    return ConfigError(f"{where}: YAML syntax error: {problem}" + (f" ({context})" if context else ""))


def read_yaml_lines(path: str | Path = "params.yaml") -> tuple[Any, dict]:
    """The parsed content of a YAML file and the line of each key (tuple of keys -> line); a
    missing or unreadable file, a syntax error or a duplicate key is a one-line ConfigError."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"no params file at {path}: run from the repository root or pass --params")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read params file {path}: {getattr(e, 'strerror', None) or e}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict = {}
        if node is None:
            return None, lines
        _key_lines(loader, node, (), lines, str(path))
        return loader.construct_document(node), lines
    except yaml.YAMLError as e:
        raise _syntax_error(path, e) from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path = "params.yaml") -> Any:
    """The parsed content of a YAML file (``read_yaml_lines`` without the lines)."""
    return read_yaml_lines(path)[0]


def _shown(path: str | Path) -> str:
    """``path`` relative to the working folder when it lies below it (Snakemake makes the
    ``--configfile`` paths absolute), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def config_layers(primary: str | Path | None, configfiles=(), overrides: Mapping | None = None) -> list[ConfigLayer]:
    """The layers of a config merged as Snakemake merges them: ``primary`` (params.yaml; None when
    ``--replace-workflow-config`` drops it), each ``--configfile`` in order, then ``--config``
    (``overrides``). Each file is read with ``read_yaml_lines``: an empty one, or one that is not a
    mapping, is a ConfigError naming it."""
    layers = []
    for path in ([primary] if primary is not None else []) + list(configfiles):
        data, lines = read_yaml_lines(_shown(path))
        if not isinstance(data, dict):
            what = "empty" if data is None else f"a {type(data).__name__}, not a mapping of params keys"
            raise ConfigError(f"{_shown(path)} is {what}: a config file holds keys of params.yaml (e.g. `ht: linear`)")
        layers.append(ConfigLayer(_shown(path), data, lines))
    if overrides:
        layers.append(ConfigLayer("--config", dict(overrides), {}))
    return layers


def name_source(message: str, source: str | Path = "params.yaml", layers: tuple[ConfigLayer, ...] = ()) -> str:
    """``message`` with each line's ``params.yaml: `` replaced by the file actually read: ``source``,
    or the last of ``layers`` that sets the deepest part of the line's path (``file:line: ``)."""
    out = []
    for line in message.splitlines():
        if line.startswith(PREFIX):
            rest = line[len(PREFIX):]
            line = (_layer_of(rest, layers) if layers else f"{source}: ") + rest
        out.append(line)
    return "\n".join(out)


def _layer_of(rest: str, layers: tuple[ConfigLayer, ...]) -> str:
    """``file:line: `` of the layer that set the path ``rest`` starts with (``a/b/0/c``)."""
    match = re.match(r"[\w.-]+(?:/[\w.-]+)*", rest)
    parts = match.group(0).split("/") if match else []
    best, best_depth, best_keys = None, 0, ()
    for layer in layers:
        node, keys = layer.data, ()
        for part in parts:
            key = int(part) if isinstance(node, list) and part.isdigit() else part
            if isinstance(node, dict) and key in node or isinstance(node, list) and isinstance(key, int) and key < len(node):
                node, keys = node[key], keys + (key,)
            else:
                break
        if keys and len(keys) >= best_depth:
            best, best_depth, best_keys = layer, len(keys), keys
    if best is None:
        return " + ".join(layer.name for layer in layers) + ": "
    line = best.lines.get(best_keys)
    return f"{best.name}:{line}: " if line else f"{best.name}: "


def nonfinite_lines(data: Any, path: tuple = ()) -> list[str]:
    """``params.yaml: a/b: nan is not a finite number ...`` for each NaN or infinity (YAML ``.nan``,
    ``.inf``) anywhere in ``data``: no number of params.yaml may be one."""
    return [f"{PREFIX}{'/'.join(map(str, p))}: {v} is not a finite number: give a finite value"
            for p, v in _floats(data, path) if not math.isfinite(v)]


def _floats(node: Any, path: tuple):
    if isinstance(node, float):
        yield path, node
    elif isinstance(node, Mapping):
        for k, v in node.items():
            yield from _floats(v, path + (k,))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _floats(v, path + (i,))
