"""ddm.snapshot: reading params.yaml (ddm.config, ddm.roles: what the Snakefile
imports) does not import torch once the registries' snapshot is cached, and the snapshot is the
registries'."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from conftest import REPO, tiny_params
from ddm import registry, snapshot

#: What the Snakefile does when it starts: validate params.yaml, resolve a job, derive the rows.
PARSE = r"""
import json, sys
from ddm.config import resolve, dataset_names
from ddm.validation import load_params
from ddm.roles import fid_ablations, table_rows
p = load_params(sys.argv[1])
cfg = resolve(p, dataset_names(p)[0], next(iter(p["methods"])))
print(json.dumps({"torch": "torch" in sys.modules, "rows": table_rows(p), "fid": fid_ablations(p)}))
"""


def _parse(tmp_path, cache) -> dict:
    params = tmp_path / "params.yaml"
    if not params.exists():
        params.write_text(yaml.safe_dump(tiny_params()))
    env = {**os.environ, "DDM_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", PARSE, str(params)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_reading_params_imports_torch_only_to_fill_the_cache(tmp_path):
    cache = tmp_path / "cache"
    first = _parse(tmp_path, cache)
    assert first["torch"], "the first start fills the cache from the registries (torch imported)"
    assert [p.name for p in cache.iterdir()] == [f"snapshot-{snapshot.digest()[:24]}.json"]
    second = _parse(tmp_path, cache)
    assert not second["torch"], "ddm.config / ddm.roles imported torch although the snapshot is cached"
    assert second == {**first, "torch": False}


def test_snapshot_is_the_registries():
    snap = registry.snapshot()
    assert snap["enums"] == registry.schema_enums()
    assert list(snap["fits"]["sampler"]) == list(registry.SAMPLERS)
    assert list(snap["fits"]["grid"]) == list(registry.GRIDS)
    assert snap["labels"]["family"]["linear"] == r"$\mathbf{a}t + \mathbf{c}$"
    assert json.loads(json.dumps(snap)) == snap  # what the cache file holds is what was taken
    assert snapshot.load() == snap  # torch is imported here: the live tables


def test_a_changed_package_gets_a_new_snapshot(tmp_path, monkeypatch):
    pkg = tmp_path / "ddm"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(snapshot, "PACKAGE", pkg)
    before = snapshot.digest()
    (pkg / "a.py").write_text("x = 2\n")
    assert snapshot.digest() != before
    (pkg / "a.py").write_text("x = 1\n")
    assert snapshot.digest() == before
    (pkg / "b.py").write_text("")
    assert snapshot.digest() != before


def test_a_stale_or_unreadable_cache_file_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("DDM_CACHE_DIR", str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh Snakemake process (restored afterwards)
    path = tmp_path / f"snapshot-{snapshot.digest()[:24]}.json"
    path.write_text("{not json")
    assert snapshot.load() == registry.snapshot()
    assert json.loads(path.read_text()) == registry.snapshot()


def test_an_unwritable_cache_folder_only_costs_the_import(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("DDM_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot be made
    monkeypatch.delitem(sys.modules, "torch")
    assert snapshot.load() == registry.snapshot()
