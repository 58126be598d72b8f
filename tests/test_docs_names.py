"""Every dotted ``ddm.`` name in README.md and docs/*.md names something that exists: its longest
importable module prefix imports and the rest resolves by getattr, so a moved or renamed function
fails here instead of sending a reader to a place that is gone.

File names (``"ddm.pt"``, ``models/ddm.pt``) and format tags (``ddm.task/1``) are not names: a
name is not preceded by a quote, a slash, a dot or a word character, nor followed by a slash.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NAME = re.compile(r"(?<![\w/.\"'-])ddm(?:\.[A-Za-z_]\w*)+(?![\w/])")


def documented_names() -> dict[str, list[str]]:
    """name -> the places ``file:line`` that write it."""
    out: dict[str, list[str]] = {}
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for name in NAME.findall(line):
                out.setdefault(name, []).append(f"{path.relative_to(REPO)}:{n}")
    return out


def resolve(name: str) -> object:
    """The object a dotted name names (ImportError or AttributeError if none)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as e:
            if e.name is None or not ".".join(parts[:cut]).startswith(e.name):
                raise  # the module exists but imports something missing: a real error
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


def test_the_pattern_finds_names_and_skips_file_names():
    line = 'see `ddm.sampling.sample_ddm`, ddm.io; not "ddm.pt", models/ddm.pt or ddm.task/1'
    assert NAME.findall(line) == ["ddm.sampling.sample_ddm", "ddm.io"]
    with pytest.raises(AttributeError):
        resolve("ddm.baselines.sample_vp_em")  # moved to ddm.sde_samplers: the kind of slip this catches


def test_every_documented_ddm_name_resolves():
    names = documented_names()
    assert len(names) > 50  # the docs name the library's parts throughout
    missing = []
    for name, where in sorted(names.items()):
        try:
            resolve(name)
        except (ImportError, AttributeError) as e:
            missing.append(f"{name} ({', '.join(where)}): {type(e).__name__}: {e}")
    assert not missing, "documented names that do not resolve:\n" + "\n".join(missing)
