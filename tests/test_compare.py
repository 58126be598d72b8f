"""ddm.compare / `ddm compare RUN_A RUN_B`: a cell moved beyond its tolerance, a systematic shift
and a flipped verdict each fail it; the same run, or a move within tolerance, passes. Fixtures are
reports/metrics.json as `ddm stats` writes them (tests/test_claims.py's make_metrics)."""

from __future__ import annotations

import copy
import json

import pytest

from conftest import run_ddm
from ddm import compare as cmp
from ddm.io import save_json
from test_claims import FID, TASKS, make_metrics


def _run(tmp_path, name: str, metrics: dict, fig3: dict | None = None):
    """A run folder: reports/metrics.json, and Fig. 3's curves where given."""
    metrics = copy.deepcopy(metrics)
    curves = metrics.pop("fig3", None) if fig3 is None else fig3
    save_json(metrics, tmp_path / name / "reports" / "metrics.json")
    for ds, f in (curves or {}).items():
        save_json(f, tmp_path / name / "results" / "metrics" / ds / "fig3.json")
    return tmp_path / name


def _scaled(table: dict, method: str, factor: float) -> dict:
    return {**table, method: {n: [v * factor for v in vals] for n, vals in table[method].items()}}


def test_the_same_run_is_the_same_evidence(tmp_path):
    a = _run(tmp_path, "a", make_metrics())
    c = cmp.compare(cmp.load_run(a), cmp.load_run(a))
    assert not c.flagged and c.verdicts == [] and all(m == 0 for _, m, _, _ in c.shifts)
    assert all(diff == 0 for _, _, _, diff, _, _ in c.rows)
    keys = [row[0] for row in c.rows]
    assert ("fid", "digits", "ddm", 10) in keys and ("mae", "saliency", "ddpm", 100) in keys
    r = run_ddm(tmp_path, "compare", str(a), str(a))
    assert r.returncode == 0, r.stderr
    assert "same evidence" in r.stdout and "verdicts: none changed" in r.stdout


def test_a_move_within_tolerance_passes_and_beyond_it_fails(tmp_path):
    """DDM's NFE 20 cell (std 0.1) moved by 0.1 std passes; by 3 std fails, naming the cell."""
    base = make_metrics()
    near = make_metrics(fid={**FID, "ddm": {**FID["ddm"], 20: [v + 0.01 for v in FID["ddm"][20]]}})
    far = make_metrics(fid={**FID, "ddm": {**FID["ddm"], 20: [v + 0.3 for v in FID["ddm"][20]]}})
    a, b, c = (_run(tmp_path, n, m) for n, m in (("a", base), ("near", near), ("far", far)))
    got = cmp.compare(cmp.load_run(a), cmp.load_run(b))
    assert not got.flagged
    row = next(r for r in got.rows if r[0] == ("fid", "digits", "ddm", 20))
    assert row[3] == pytest.approx(0.01) and row[4] == pytest.approx(0.1)
    got = cmp.compare(cmp.load_run(a), cmp.load_run(c))
    assert got.flagged and got.verdicts == []  # DDM is still far ahead: no verdict moves
    assert [r[0] for r in got.rows if r[-1]] == [("fid", "digits", "ddm", 20)]
    r = run_ddm(tmp_path, "compare", str(a), str(c))
    assert r.returncode == 1
    line = next(x for x in r.stdout.splitlines() if x.startswith("fid digits ddm 20 "))
    assert "+3.00" in line and "moved more than 2 std" in line
    assert run_ddm(tmp_path, "compare", str(a), str(c), "--tolerance", "4").returncode == 0


def test_every_cell_a_little_worse_is_a_systematic_shift(tmp_path):
    """Each Table 1 cell up by one std: no cell beyond 2 std, but the table's mean move is, and it fails
    (the conditioned tables, unmoved, do not dilute it: the shift is per table)."""
    base = make_metrics()
    worse = copy.deepcopy(base)
    for d in worse["datasets"].values():
        for by_nfe in d["results"].values():
            for cell in by_nfe.values():
                if cell["std"]:
                    cell["values"] = [v + cell["std"] for v in cell["values"]]
                    cell["mean"] += cell["std"]
    c = cmp.compare((base, {}), (worse, {}))
    assert not any(r[-1] for r in c.rows)
    assert c.flagged and [(g, round(m, 6), f) for g, m, n, f in c.shifts if f] == [(("fid", "digits"), 1.0, True)]
    assert all(m == 0 for g, m, n, f in c.shifts if g != ("fid", "digits"))
    assert "a systematic shift" in cmp.format_comparison(c)


def test_a_flipped_verdict_fails_even_when_no_cell_moves_far(tmp_path):
    """Table 3: DDPM stops improving on inpainting (a cell far off, and the claim's verdict flips)."""
    flat_ddpm = {**TASKS, "inpainting": {**TASKS["inpainting"], "ddpm": {
        n: [95.0, 96.0, 95.5][:len(v)] for n, v in TASKS["inpainting"]["ddpm"].items()}}}
    a, b = _run(tmp_path, "a", make_metrics()), _run(tmp_path, "b", make_metrics(tasks=flat_ddpm))
    c = cmp.compare(cmp.load_run(a), cmp.load_run(b))
    assert ("table3-flat", "reproduced", "not reproduced") in c.verdicts
    r = run_ddm(tmp_path, "compare", str(a), str(b), "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["flagged"] and ["table3-flat", "reproduced", "not reproduced"] in out["verdicts"]


def test_fig3_curves_are_read_from_the_run_folder(tmp_path):
    """Fig. 3's verdict comes from results/metrics/<dataset>/fig3.json: without it, 'not tested'."""
    full = make_metrics()
    a = _run(tmp_path, "a", full)
    b = _run(tmp_path, "b", {k: v for k, v in full.items() if k != "fig3"}, fig3={})
    c = cmp.compare(cmp.load_run(a), cmp.load_run(b))
    assert c.verdicts == [("fig3-x0-mse", "reproduced", "not tested in this run")]


def test_a_cell_only_one_run_has_and_a_plateau_flip_are_named(tmp_path):
    base = make_metrics()
    more = make_metrics(fid={**FID, "ddm": {**FID["ddm"], 50: [7.0, 7.1, 6.9]}})
    for m, v in ((base, "converged"), (more, "borderline")):
        m["datasets"]["digits"]["plateau"] = {"ddm": {"verdict": v, "checks": []}}
    c = cmp.compare((base, {}), (more, {}))
    only = [r for r in c.rows if r[1] is None]
    assert [r[0] for r in only] == [("fid", "digits", "ddm", 50)] and only[0][-1]
    assert ("plateau digits ddm", "converged", "borderline") in c.verdicts
    text = cmp.format_comparison(c)
    assert "only in one run" in text and "plateau digits ddm: converged -> borderline" in text


def test_a_run_without_metrics_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_ddm(tmp_path, "compare", str(tmp_path / "empty"), str(tmp_path / "empty"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "reports/metrics.json" in r.stderr
