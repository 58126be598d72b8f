"""The checks of the ablation claims (Tables 4 and 5, Fig. 3): each yields ddm.criteria's
conditions with their evidence, for ddm.claims, which states the claims and combines the verdicts.
Table 4 (is h_t = c the lowest?) and Table 5 (do the defaults win or tie?) test their rows with
:func:`ddm.stats.ttest` over training seeds where the run has them (ddm.replicates), else over
sample sets; Fig. 3 orders the mean x0 MSE of three curves."""

from __future__ import annotations

from typing import Mapping

from ddm.criteria import (BEST_FAMILY, BORDERLINE, DDM, DDPM, DDPM_X0, SAMPLE_SETS, TABLE5_NFE, Check, absent,
                          ahead, all_hold, by_p, datasets_of, esc, fmt_num, fmt_p, fmt_value, method_name)

__all__ = ["check_table4", "check_table5", "check_fig3"]


# -- Tables 4 and 5 ---------------------------------------------------------------------------
def _family_names() -> dict[str, str]:
    """Table 4's row label -> its h_t family (the registries' snapshot, ddm.snapshot)."""
    from ddm import snapshot

    return {label: family for family, label in snapshot.load()["labels"]["family"].items()}


def _family_against(best: Mapping, other: Mapping, name: str) -> tuple[bool | str, str]:
    """One pair of Table 4's cells: the h_t = c row against another family's row (its LaTeX ``name``).
    c lower (or within CPU_REL): ``ahead``. The other family lower: refuted by a two-sided Welch
    t-test over the cells' values with p below P_BAND (training seeds, or sample sets), borderline
    inside it and above it (neither shown nor refuted); with fewer than 2 values a cell, ``ahead``."""
    from ddm.stats import ttest

    ok = ahead(best["mean"], other["mean"])
    if ok is not False:
        return ok, ""
    a, b = best.get("values") or [], other.get("values") or []
    if len(a) < 2 or len(b) < 2:
        return False, f"{name} is lower (no test: fewer than 2 values a cell)"
    p = ttest(a, b)["p"]
    units = [esc(c.get("unit") or SAMPLE_SETS) for c in (best, other)]
    unit = f"{len(a)} vs {len(b)} {units[0]}" if units[0] == units[1] else f"{len(a)} {units[0]} vs {len(b)} {units[1]}"
    return (False if by_p(p) is True else BORDERLINE), f"{name} is lower: Welch p = {fmt_p(p)} ({unit})"


def check_table4(metrics: Mapping) -> list[Check]:
    """Table 4: at every NFE of the table, the h_t = c row has the lowest mean FID; a family with a
    lower mean refutes it only when a Welch t-test says so (``_family_against``)."""
    families = _family_names()
    rows = metrics.get("ablation_rows", {}).get("table4", [])
    out = []
    for ds, d in datasets_of(metrics):
        res = d["results"]
        measured = [r for r in rows if r["method"] in res]
        if not measured:
            continue
        best = next((r["method"] for r in measured if families.get(r["label"]) == BEST_FAMILY), None)
        nfes = sorted({int(n) for r in measured for n in res[r["method"]]})
        for nfe in nfes:
            cells = {r["method"]: res[r["method"]][str(nfe)] for r in measured if str(nfe) in res[r["method"]]}
            name = {r["method"]: esc(families.get(r["label"], r["method"])) for r in measured}
            text = f"{esc(ds)}, NFE {nfe}: " + ", ".join(f"{name[m]} {fmt_value(c)}" for m, c in cells.items())
            others = [m for m in cells if m != best]
            if best not in cells:
                out.append((None, text + f"; no FID of $\\mathbf{{h}}_t$ = {esc(BEST_FAMILY)}"))
            elif not others:
                out.append((None, text + "; no other family measured"))
            else:
                pairs = [_family_against(cells[best], cells[m], name[m]) for m in others]
                notes = [t for _, t in pairs if t]
                out.append((all_hold(ok for ok, _ in pairs), text + "".join(f"; {t}" for t in notes)))
    return out or absent("Table 4 was not built (ablations off)")


def _group_check(group: str, rows: list[Mapping], res: Mapping, main: str) -> Check:
    """One Table 5 group: the main model's 10-step FID is the lowest, or not significantly above it."""
    from ddm.stats import ttest

    key = str(TABLE5_NFE)
    got = {r["method"]: res[r["method"]][key] for r in rows if key in res.get(r["method"], {})}
    label = {r["method"]: r["label"] for r in rows}  # Table 5's row labels (LaTeX, ddm.roles)
    text = f"{esc(group)}: " + ", ".join(
        f"{label[m]}{' (default)' if m == main else ''} {fmt_value(got[m])}" for m in label if m in got)
    if main not in got or len(got) < 2:
        return None, f"{esc(group)}: the default or every other setting lacks a {TABLE5_NFE}-step FID"
    best = min(got, key=lambda m: got[m]["mean"])
    if got[main]["mean"] <= got[best]["mean"]:
        return True, text + "; the default wins"
    a, b = got[main]["values"], got[best]["values"]
    if len(a) < 2 or len(b) < 2:
        return None, text + f"; {label[best]} is lower, and a tie cannot be tested (fewer than 2 repeats)"
    p = ttest(a, b)["p"]
    loses = by_p(p)  # a significant loss is the claim's contradiction; a loss inside P_BAND is borderline
    verdict_text = {True: "loses to", False: "ties with", BORDERLINE: "borderline against"}[loses]
    ok = BORDERLINE if loses == BORDERLINE else not loses
    unit = got[main].get("unit") or SAMPLE_SETS
    return ok, text + f"; the default {verdict_text} {label[best]}: Welch p = {fmt_p(p)} ({len(a)} vs {len(b)} {esc(unit)})"


def check_table5(metrics: Mapping) -> list[Check]:
    """Table 5: per group (weighting, head, loss), the main DDM model wins or ties."""
    rows = metrics.get("ablation_rows", {}).get("table5", [])
    main = next((r["method"] for r in rows if r["method"] in metrics.get("table1_methods", [])), None)
    out = []
    for ds, d in datasets_of(metrics):
        if not any(r["method"] in d["results"] and r["method"] != main for r in rows):
            continue
        groups: dict[str, list] = {}
        for r in rows:
            groups.setdefault(r["group"], []).append(r)
        out += [_group_check(f"{ds}, {g}", rs, d["results"], main) for g, rs in groups.items()]
    return out or absent("Table 5 was not built (ablations off)")


# -- Fig. 3 -----------------------------------------------------------------------------------
def check_fig3(metrics: Mapping) -> list[Check]:
    """Fig. 3: mean x0 MSE over the reverse steps, DDPM > DDPM + x0 branch > DDM."""
    out = []
    for ds, f in sorted(metrics.get("fig3", {}).items()):
        curves = f["curves"]
        order = (DDPM, DDPM_X0, DDM)
        missing = [m for m in order if m not in curves]
        if missing:
            out.append((None, f"{esc(ds)}: no curve of {', '.join(method_name(m) for m in missing)}"))
            continue
        mse = {m: sum(curves[m]["mse"]) / len(curves[m]["mse"]) for m in order}
        text = (f"{esc(ds)} (NFE {f['nfe']}, {f['num_samples']} samples): mean $x_0$ MSE "
                + ", ".join(f"{method_name(m)} {fmt_num(mse[m])}" for m in order))
        out.append((all_hold([ahead(mse[DDPM_X0], mse[DDPM]), ahead(mse[DDM], mse[DDPM_X0])]), text))
    return out or absent("Fig. 3 was not built (ablations off)")
