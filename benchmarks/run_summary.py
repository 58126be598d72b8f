"""A finished run's numbers as Markdown, for the README and docs/results.md: its provenance, Table 1
(FID mean ± std with KID beside it, the marker of each column, the plateau check of each network),
Tables 2 and 3, and the verdict of every claim of the paper (ddm.claims.verdicts, as
reports/claims.tex has them). Nothing is typed by hand: every figure comes from the run's
reports/metrics.json and results/metrics/<dataset>/fig3.json.

    .venv/bin/python benchmarks/run_summary.py RUN_FOLDER [--cold-seconds S] > summary.md
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ddm.claims import verdicts
from ddm.report.tables import kid_power

MARK = {"significant": " ■", "not_significant": " □"}


def plain(tex: str) -> str:
    """LaTeX text of a label or an evidence line, readable in Markdown."""
    for cmd, char in ((r"\lambda", "λ"), (r"\ell", "ℓ"), (r"\sigma", "σ"), (r"\mathcal{N}", "N")):
        tex = tex.replace(cmd, char)
    text = tex.replace(r"\%", "%").replace(r"\pm", "±").replace(r"\mathbf", "").replace(r"\,", " ")
    text = re.sub(r"\\(textbf|textit|emph|texttt)\{([^{}]*)\}", r"\2", text)
    text = re.sub(r"\\[a-zA-Z]+", "", text)
    return text.replace("{", "").replace("}", "").replace("$", "").replace("~", " ")


def _cell(res: dict | None, power: int, marker: str | None, digits: int = 2) -> str:
    if res is None:
        return "--"
    text = f"{res['mean']:.{digits}f}" + (f" ± {res['std']:.{digits}f}" if res.get("std") is not None else "")
    if marker in MARK:
        text = f"**{text}**{MARK[marker]}"
    kid = res.get("kid")
    if kid:
        f = 10.0 ** power
        text += f" ({f * kid['mean']:.2f}" + (f" ± {f * kid['std']:.2f})" if kid.get("std") is not None else ")")
    return text


def table1(metrics: dict) -> list[str]:
    out = []
    for ds, d in metrics["datasets"].items():
        res = d["results"]
        methods = [m for m in metrics["table1_methods"] if m in res]
        nfes = sorted({int(n) for m in methods for n in res[m]})
        power = kid_power([c["kid"]["mean"] for m in methods for c in res[m].values() if c.get("kid")])
        out += [f"Table 1, {ds} ({d['extractor']} features, {d['reference']}); cells: FID mean ± std "
                f"(KID x 10^{power} mean ± std); ■ / □: best, lower than the second best with p < 0.05 / not.", "",
                "| Method | Param | " + " | ".join(f"NFE {n}" for n in nfes) + " | plateau |",
                "|---|---|" + "---|" * len(nfes) + "---|"]
        for m in methods:
            marks = {n: (d.get("table1", {}).get(str(n)) or {}) for n in nfes}
            cells = [_cell(res[m].get(str(n)), power, marks[n].get("marker") if marks[n].get("best") == m else None)
                     for n in nfes]
            plateau = (d.get("plateau") or {}).get(m, {}).get("verdict", "not checked")
            out.append(f"| {plain(d['samplers'].get(m, m))} | {d['params'].get(m, 0) / 1e6:.2f}M | "
                       + " | ".join(cells) + f" | {plateau} |")
        counts = {n: sorted({res[m][str(n)].get("num_samples") for m in methods if str(n) in res[m]}) for n in nfes}
        units = {n: (d.get("table1", {}).get(str(n)) or {}).get("unit", "sample sets") for n in nfes}
        out += ["", "Samples per set: " + ", ".join(f"NFE {n}: {'/'.join(map(str, c))}" for n, c in counts.items())
                + f". Markers' unit: {', '.join(sorted(set(units.values())))}.", ""]
    return out


def tasks(metrics: dict) -> list[str]:
    cond = metrics.get("conditioned")
    if not cond:
        return []
    nfes = sorted({int(n) for n in cond.get("table2_nfe", []) + cond.get("table3_nfe", [])})
    out = ["Tables 2 and 3 (conditioned tasks): metric mean ± std over sample sets; the trivial references "
           "beside.", "", "| Task | Method | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
           "|---|---|" + "---|" * len(nfes)]
    for task, t in cond["tasks"].items():
        for m in cond["methods"]:
            r = t["results"].get(m, {})
            out.append(f"| {task} ({t['metric']}) | {cond['labels'].get(m, m)} | " + " | ".join(
                _cell(r.get(str(n)), 0, None, 4 if t["metric"] == "mae" else 2) for n in nfes) + " |")
        refs = ", ".join(f"{k} {v:.4g}" for k, v in (t.get("references") or {}).items() if isinstance(v, float))
        out.append(f"| {task} | references | {refs} |" + " |" * (len(nfes) - 1))
    return out + [""]


def claims(metrics: dict) -> list[str]:
    out = ["| Claim | Verdict | Evidence |", "|---|---|---|"]
    for r in verdicts(metrics):
        out.append(f"| {plain(r['source'])}: {plain(r['claim'])} | **{r['verdict']}** | {plain(r['evidence'])} |")
    return out + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the run's folder (holds reports/metrics.json)")
    ap.add_argument("--cold-seconds", type=float, help="the run's cold time, for the header")
    args = ap.parse_args()
    metrics = json.loads((args.run / "reports/metrics.json").read_text())
    fig3 = {p.parent.name: json.loads(p.read_text()) for p in sorted(args.run.glob("results/metrics/*/fig3.json"))}
    metrics["fig3"] = fig3
    prov, run = metrics.get("provenance", {}), metrics.get("run", {})
    head = [f"Run `{run.get('name')}` (preset `{metrics['preset']}`), commit {str(prov.get('git_commit'))[:7]}, "
            f"{run.get('replicates')} training seed(s) per Table 1 method, train steps {run.get('train_steps')}"
            + (f", cold {args.cold_seconds / 60:.1f} min" if args.cold_seconds else "") + ".", ""]
    print("\n".join(head + claims(metrics) + table1(metrics) + tasks(metrics)))


if __name__ == "__main__":
    main()
