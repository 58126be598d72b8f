"""What the report makes of each ablation method: its ``role`` in params.yaml, never its name.

======= ==========================================================================================
role    the method is
======= ==========================================================================================
table4  a row of Table 4 (choices of h_t), labelled with its h_t family's ``label`` (ddm.families, read
        through ddm.snapshot)
table5  a row of Table 5 (hyperparameter, architecture, loss type), labelled with the one setting in
        which it was trained differently from the main DDM model (a weighting's ``label``, ddm.losses.WEIGHTINGS, or
        :data:`SETTING_LABELS`); each group also shows the main model with its own setting, rows in
        the order of the settings (Table 5's: lambda = 1, 1/t, e^t; conv, decoder; l1, l2)
fig3    a curve of Fig. 3 (MSE of the predicted x0 against t): trained, not sampled for FID; the
        figure also shows the Table 1 methods of the same process and the main DDM model
(none)  trained and sampled for FID (metrics.json, the FID-vs-NFE figure), in no table
======= ==========================================================================================

An explicit ``label:`` (LaTeX) replaces the derived row label; a Table 5 row that differs from
the main model in more than one setting, or in one without a label here, needs one. The main
DDM model is the first method of ``methods`` with ``process: ddm`` (Table 1's DDM row).

``table_rows`` is what ``ddm stats`` writes into reports/metrics.json (``ablation_rows``) and
what ``ddm.report.tables.render_tables`` lays out; the Snakefile computes it when it starts, so a role
that makes no row fails before any job runs.
"""

from __future__ import annotations

from typing import Any, Mapping

from ddm import snapshot
from ddm.config import METHOD_DEFAULTS, REPORT_KEYS, SAMPLING_KEYS, ConfigError, all_methods

__all__ = ["ROLES", "TABLE5_GROUPS", "SETTING_LABELS", "with_role", "fid_ablations", "main_model", "differences",
           "table4_rows", "table5_rows", "table_rows", "fig3_methods"]

#: The roles of an ablation method (params.yaml ``role:``; the schema's enum: ``ddm.validation.schema``).
ROLES = ("table4", "table5", "fig3")
#: Table 5's groups: the setting a row changes -> the group named in the table's first column.
TABLE5_GROUPS = {"weighting": "Hyperparameter", "head": "Architecture", "loss_type": "Loss type"}
#: Row labels of the Table 5 settings that have no registry of their own, in row order.
SETTING_LABELS = {"head": {"conv": "U-Net+conv", "decoder": "U-Net+decoder"},
                  "loss_type": {"l1": r"$\ell_1$", "l2": r"$\ell_2$"}}


def with_role(params: Mapping, role: str) -> list[str]:
    """The ablation methods with ``role``, in params.yaml order."""
    return [m for m, e in params["ablation_methods"].items() if e.get("role") == role]


def fid_ablations(params: Mapping) -> list[str]:
    """The ablation methods sampled for FID at ``ablation_nfe``: all but the Fig. 3 models."""
    return [m for m, e in params["ablation_methods"].items() if e.get("role") != "fig3"]


def main_model(params: Mapping) -> str | None:
    """The main DDM model: the first Table 1 method with ``process: ddm`` (None if there is none)."""
    return next((m for m, e in params["methods"].items() if e["process"] == "ddm"), None)


def _settings(params: Mapping, method: str) -> dict[str, Any]:
    entry = all_methods(params)[method]
    out = {**METHOD_DEFAULTS[entry["process"]], **entry}
    if out.get("ht") == "main":
        out["ht"] = params["ht"]
    return {k: v for k, v in out.items() if k not in REPORT_KEYS}


def differences(params: Mapping, method: str, other: str) -> dict[str, Any]:
    """The settings (defaults filled in, ``ht: main`` resolved) in which ``method`` differs from
    ``other``: key -> the value ``method`` has (None where it lacks the key)."""
    a, b = _settings(params, method), _settings(params, other)
    return {k: a.get(k) for k in {**a, **b} if a.get(k) != b.get(k)}


def table4_rows(params: Mapping) -> list[dict[str, str]]:
    """Table 4's rows: ``{"method", "label"}`` of each ``role: table4`` method, in params.yaml order."""
    rows = []
    for m in with_role(params, "table4"):
        entry = params["ablation_methods"][m]
        if entry["process"] != "ddm":
            raise ConfigError(f"params.yaml: ablation_methods/{m}: role table4 (a choice of h_t) needs process "
                              f"ddm, got '{entry['process']}'")
        ht = _settings(params, m)["ht"]
        rows.append({"method": m, "label": entry.get("label") or snapshot.load()["labels"]["family"][ht]})
    return rows


def _setting_labels(key: str | None) -> dict[str, str]:
    """A setting's value -> its Table 5 label, in row order (the weightings' from their registry)."""
    return snapshot.load()["labels"]["weighting"] if key == "weighting" else SETTING_LABELS.get(key, {})


def _setting_label(key: str | None, value: Any) -> str | None:
    return _setting_labels(key).get(value)


def _setting_rank(key: str | None, value: Any) -> int:
    order = list(_setting_labels(key))
    return order.index(value) if value in order else len(order)


def _table5_row(params: Mapping, method: str, main: str | None) -> tuple[str | None, Any, str]:
    """(the setting a Table 5 row changes, its value there, the row label)."""
    where = f"params.yaml: ablation_methods/{method}: role table5"
    if main is None:
        raise ConfigError(f"{where} compares with the main DDM model, and `methods` has no method with process ddm")
    # what was trained differently; sampling settings (e.g. a changed main sampler) only when nothing else differs
    diff = differences(params, method, main)
    diff = {k: v for k, v in diff.items() if k not in SAMPLING_KEYS} or diff
    label = params["ablation_methods"][method].get("label")
    if not diff:
        raise ConfigError(f"{where}: it does not differ from the main DDM model '{main}'")
    if len(diff) > 1 and not label:
        raise ConfigError(f"{where}: it differs from the main DDM model '{main}' in {', '.join(sorted(diff))}; "
                          f"a derived row label names one setting: give it a `label:`")
    key = next((k for k in TABLE5_GROUPS if k in diff), None)
    label = label or _setting_label(key, diff.get(key))
    if not label:
        k = next(iter(diff))
        raise ConfigError(f"{where}: no Table 5 label for {k}: {diff[k]} (labelled: {', '.join(TABLE5_GROUPS)}); "
                          f"give it a `label:`")
    return key, diff.get(key), label


def table5_rows(params: Mapping) -> list[dict[str, str]]:
    """Table 5's rows ``{"group", "label", "method"}``: per group (in order of first appearance),
    its ``role: table5`` methods and the main DDM model, in the order of their settings."""
    main = main_model(params)
    groups: dict[str, list[tuple[int, str, str]]] = {}
    for m in with_role(params, "table5"):
        key, value, label = _table5_row(params, m, main)
        group = TABLE5_GROUPS.get(key, "Other")
        if group not in groups:
            groups[group] = []
            own = _settings(params, main).get(key)
            if _setting_label(key, own):
                groups[group].append((_setting_rank(key, own), main, _setting_label(key, own)))
        groups[group].append((_setting_rank(key, value), m, label))
    return [{"group": g, "label": label, "method": m}
            for g, rows in groups.items() for _, m, label in sorted(rows, key=lambda r: r[0])]


def table_rows(params: Mapping) -> dict[str, list[dict[str, str]]]:
    """The rows of Tables 4 and 5 (reports/metrics.json's ``ablation_rows``)."""
    return {"table4": table4_rows(params), "table5": table5_rows(params)}


def fig3_methods(params: Mapping) -> list[str]:
    """The models of Fig. 3: for each ``role: fig3`` method, the Table 1 methods of its process and
    itself; then the main DDM model ([ddpm, ddpm_x0, ddm] for the shipped params.yaml)."""
    out: list[str] = []
    for f in with_role(params, "fig3"):
        process = params["ablation_methods"][f]["process"]
        out += [m for m, e in params["methods"].items() if e["process"] == process and m not in out]
        out.append(f)
    main = main_model(params)
    return out + [main] if out and main and main not in out else out
