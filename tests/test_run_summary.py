"""benchmarks/run_summary.py, the generator of docs/results.md's run blocks: with the ablations on, the
block holds Tables 4 and 5 (a shared network marked), the values behind every mean over training
seeds (one row per network) and Fig. 3's x0 MSE per step, from a run's metrics as `ddm stats` writes
them; a run without them has none of these blocks."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO, TINY_PARAMS
from ddm.replicates import replicate_name
from ddm.report.collect import collect
from ddm.validation import load_params
from test_trusted import _write

spec = importlib.util.spec_from_file_location("run_summary", REPO / "benchmarks" / "run_summary.py")
run_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_summary)

#: FID of network k (seed + k) of each Table 1 method and Table 5's unit weighting, at NFE 2
SEEDS = {"ddm": [10.0, 14.0, 12.0], "ddpm": [20.0, 21.0, 26.0], "sde": [30.0, 31.0, 29.0], "w_unit": [11.0, 13.0, 15.0]}


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    params = load_params(TINY_PARAMS)
    params.update(replicates=3, ablations=True)
    rows = []
    for m, fids in SEEDS.items():
        rows += [(m if k == 0 else replicate_name(m, k), 2, k, v, v / 1e3, 20) for k, v in enumerate(fids)]
    rows += [("ht_constant", 2, 0, 10.0, 0.01, 20), ("ht_linear", 2, 0, 17.5, 0.02, 20)]
    m = collect(_write(tmp_path_factory.mktemp("metrics"), rows), params)
    m["fig3"] = {"digits": {"nfe": 2, "num_samples": 64, "curves": {
        "ddm": {"t": [1.0, 0.5], "mse": [0.25, 0.05]},
        "ddpm": {"t": [1.0, 0.501], "mse": [4.0, 0.5]},
        "ddpm_x0": {"t": [1.0, 0.501], "mse": [1.0, 0.3]}}}}
    return m


def test_tables_4_and_5_have_their_rows_and_mark_the_shared_network(metrics):
    lines = run_summary.ablation_tables(metrics)
    text = "\n".join(lines)
    assert text.startswith("Table 4 (h_t families), digits") and "Table 5 (weighting, head, loss), digits" in text
    c_row = next(line for line in lines if line.startswith("| c "))
    assert "† (ddm's network)" in c_row and "| 10.00 (10.00) |" in c_row
    assert any(line.startswith("| at + c | 17.50 (20.00) |") for line in lines)  # KID x 10^3
    unit = next(line for line in lines if "λ_1 = 1, λ_2 = 1" in line)
    assert "13.00 ± 2.00" in unit  # the mean ± std over its 3 training seeds


def test_the_networks_behind_each_mean_are_listed(metrics):
    lines = run_summary.per_network(metrics)
    rows = [line for line in lines if ", network " in line]
    assert len(rows) == 3 * len(SEEDS)  # Table 1's three methods and Table 5's unit weighting, 3 networks each
    assert any(line.endswith("network 1 | 14.00 |") for line in rows)  # DDM's far seed, by its index


def test_fig3_gives_each_step_and_the_mean_the_claim_compares(metrics):
    lines = run_summary.fig3_table(metrics)
    ddpm = next(line for line in lines if line.startswith("| DDPM |"))
    assert ddpm == "| DDPM | 2.25 | 4 (1.000) | 0.5 (0.501) |"
    assert any(line.startswith("| DDM | 0.15 |") for line in lines)


def test_a_run_without_ablations_or_seeds_has_none_of_these_blocks(tmp_path):
    params = load_params(TINY_PARAMS)
    m = collect(_write(tmp_path, [(x, 2, 0, 10.0, None, 20) for x in ("ddm", "ddpm", "sde")]), params)
    assert run_summary.ablation_tables(m) == [] and run_summary.per_network(m) == [] and run_summary.fig3_table(m) == []


def test_the_readme_verdicts_name_every_claim_without_its_numbers(metrics):
    """The README's block: one line per claim of ddm.claims, its verdict, and none of the evidence
    (whose figures live in docs/results.md)."""
    from ddm.claims import verdicts

    expected = verdicts(metrics)
    lines = run_summary.verdict_list(metrics)
    assert len(lines) == len(expected) == 7
    for line, r in zip(lines, expected):
        assert line.endswith(f": **{r['verdict']}**"), line
        assert run_summary.plain(r["evidence"]) not in line
    assert not any("10.00" in line or "±" in line for line in lines)
