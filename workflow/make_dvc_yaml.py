#!/usr/bin/env python
"""Generate dvc.yaml (DVC's view of the pipeline) from workflow/phases.yaml.

    python workflow/make_dvc_yaml.py            # (re)write dvc.yaml at the repository root
    python workflow/make_dvc_yaml.py --check    # exit 1 if dvc.yaml differs from what it would write

Snakemake owns the per-job graph (Snakefile, workflow/rules/*.smk); DVC sees one stage per phase
of workflow/phases.yaml, in that file's order, and each stage runs Snakemake on the phase's
target rule `phase_<name>`. Snakemake decides per job what is stale (mtimes, params, code), so a
changed `ht` retrains only the configurations whose resolved config uses it; DVC decides per
phase (hashes of deps, params, outs) whether to start Snakemake at all, and tracks the results
(cache, dvc.lock, `dvc exp`).

Per stage:
  cmd     sh workflow/snakemake.sh --cores all phase_<name> $DDM_SNAKEMAKE_ARGS
          (SNAKEMAKE: the wrapper finds Snakemake without an activated environment, so that
          `.venv/bin/dvc repro` works from a plain shell, or says in one line what to do;
          extra Snakemake arguments from the environment, word-split by the shell, e.g.
          DDM_SNAKEMAKE_ARGS="--profile slurm" dvc repro; written `$VAR`, not `${VAR}`, which DVC
          would take for its own templating; never put --config there: DVC would not see it).
  deps    the phase's deps; the package files its rules' `ddm` subcommands run (code_deps:
          ddm.codedeps, the same files whose digest is each rule's `code` param in the Snakefile,
          so `dvc status` and `snakemake -n` agree on what a code change makes stale); the workflow
          files every phase runs (CODE_DEPS); the plug-in files of params.yaml (plugin_deps, as
          the rules' `code` params); the stage that runs `prepare` also depends on every
          local `source` of params.yaml's presets (source_deps).
  params  the params.yaml keys the phase reads (block list: `${...}` in a one-line list is invalid).
  outs    the phase's outs, all `persist: true`: DVC deletes a stage's outputs before running it
          unless they persist, and Snakemake, not DVC, must decide which of the files are stale.
          Caching per folder: cached by DVC, except UNCACHED (regenerable, git-ignored) and
          GIT_TRACKED (small text that git tracks).
  metrics the phase's metrics (cache: false: git tracks them, so `dvc exp show` reads them from
          each experiment's commit).
  plots   the phase's plots (a path, or {path: {x: .., y: .., template: ..}} in phases.yaml).
"""

from __future__ import annotations

import argparse
import difflib
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's own package (ddm.io, ddm.codedeps: standard library only)
from ddm.codedeps import command_files  # noqa: E402
from ddm.io import save_text  # noqa: E402
from ddm.plugins import absolute, is_file_entry  # noqa: E402
PHASES = ROOT / "workflow" / "phases.yaml"
DVC_YAML = ROOT / "dvc.yaml"
PARAMS = ROOT / "params.yaml"

#: The workflow code every phase runs (and the conda environment its rules declare): a change reruns
#: every stage's Snakemake, which then decides by its own rerun triggers which jobs are stale. The
#: package code of each phase is code_deps(phase).
CODE_DEPS = ["Snakefile", "workflow/rules", "workflow/envs", "workflow/snakemake.sh"]

#: How a stage runs Snakemake: through this wrapper, which finds it at .venv/bin/snakemake (or
#: $DDM_SNAKEMAKE, or PATH). DVC runs a stage's cmd with the caller's PATH, so a bare `snakemake`
#: fails with "command not found" under `.venv/bin/dvc repro` typed without an activated venv.
SNAKEMAKE = "sh workflow/snakemake.sh"

#: Outputs DVC does not copy into .dvc/cache (`cache: false`), and why. They stay git-ignored:
#: an uncached output that git does not ignore is staged into every `dvc exp run` commit.
UNCACHED = {
    "results/samples": "one .pt per (dataset, method, NFE, repeat): 50k images each at the paper "
    "preset, regenerable from results/models with fixed seeds, read only by the evaluate and "
    "tables phases; caching them would double the largest folder of the pipeline",
}

#: Outputs that git, not the DVC cache, tracks (`cache: false` and NOT git-ignored), and why.
#: The phases' metrics are always in this group (see render()).
GIT_TRACKED = {
    "reports/tables.tex": "the paper's tables as LaTeX: a few kB of text whose diff is worth "
    "reviewing; each `dvc exp run` commits it with the experiment",
    "reports/claims.tex": "a verdict per claim of the paper (ddm.claims) as LaTeX: a few kB of text "
    "whose diff shows a verdict that flips",
}

#: Environment variable whose value is appended to every stage's Snakemake command line.
ARGS_VAR = "DDM_SNAKEMAKE_ARGS"

HEADER = """\
# GENERATED FILE: do not edit. Source: workflow/phases.yaml; generator: workflow/make_dvc_yaml.py.
# Regenerate with `python workflow/make_dvc_yaml.py`; `python workflow/make_dvc_yaml.py --check`
# (run by tests/test_dvc.py) fails when this file is out of date.
#
# One stage per phase, each running Snakemake on the phase's target rule; Snakemake decides per job
# what is stale, DVC per phase (hashes of deps, params, outs) whether to start it. Outputs persist
# (DVC must not delete them before Snakemake runs). Extra Snakemake arguments come from the
# environment: DDM_SNAKEMAKE_ARGS="--profile slurm" dvc repro. workflow/snakemake.sh finds Snakemake
# (.venv/bin/snakemake, $DDM_SNAKEMAKE or PATH). A complete `snakemake all` run outside DVC records
# its products in dvc.lock (the Snakefile's onsuccess: `dvc commit -f`), so DVC knows they are current.
"""


def load_phases(path: Path = PHASES) -> dict:
    with open(path) as f:
        phases = yaml.safe_load(f)
    if not isinstance(phases, dict) or not phases:
        raise SystemExit(f"{path}: expected a mapping of phases")
    for name, p in phases.items():
        missing = {"rules", "deps", "outs", "params"} - set(p)
        if missing:
            raise SystemExit(f"{path}: phase {name}: missing {sorted(missing)}")
        if not isinstance(p["rules"], dict):
            raise SystemExit(f"{path}: phase {name}: rules must map each rule to its `ddm` subcommand, "
                             f"e.g. {{sample: sample}}; got {p['rules']!r}")
        declared = set(p.get("metrics", [])) | {_plot_path(x) for x in p.get("plots", [])}
        if not declared <= set(p["outs"]):
            raise SystemExit(f"{path}: phase {name}: metrics/plots {sorted(declared - set(p['outs']))} "
                             "are not among its outs")
    return phases


def _plot_path(item) -> str:
    """A phases.yaml plots entry is a path, or {path: {x: ..., y: ..., template: ...}}."""
    if isinstance(item, dict):
        if len(item) != 1:
            raise SystemExit(f"{PHASES}: a plots entry with properties has one key (its path): {item}")
        return next(iter(item))
    return item


def _plot_props(item) -> dict:
    return dict(next(iter(item.values())) or {}) if isinstance(item, dict) else {}


def _scalar(s: str) -> str:
    """A YAML scalar for s (plain when YAML allows it)."""
    text = yaml.safe_dump(s, width=10**6)
    text = text[: -len("...\n")] if text.endswith("\n...\n") else text
    return text.strip()


def _dedup(items):
    seen, out = set(), []
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def source_deps(params_path: Path = PARAMS) -> list[str]:
    """The local `source` of each dataset of every preset in params.yaml and of each conditioned task
    that reads a data set (a folder of images, e.g. an `imagefolder`, or an archive; a file:// URL
    as its path; http(s) URLs are not deps), sorted:
    DVC then reruns the stage that runs `prepare` when their content changes. Every preset, not just
    the active one, so `dvc exp run -S preset=...` needs no regeneration; a path given here must
    exist wherever `dvc repro` runs."""
    params = yaml.safe_load(params_path.read_text()) if params_path.exists() else None
    found = set()
    blocks = [b for preset in ((params or {}).get("presets") or {}).values() for b in (preset or {}).values()]
    blocks += [b for cond in ((params or {}).get("conditioned_presets") or {}).values()  # a task's dataset source
               for b in ((cond or {}).get("tasks") or {}).values()]
    for block in blocks:
        src = block.get("source") if isinstance(block, dict) else None
        url = urllib.parse.urlparse(src) if isinstance(src, str) and src else None
        if url is not None and url.scheme.lower() == "file":
            found.add(urllib.request.url2pathname(url.path))
        elif url is not None and url.scheme.lower() not in ("http", "https"):
            found.add(src)
    return sorted(found)


def plugin_deps(params_path: Path = PARAMS) -> list[str]:
    """The plug-in files of params.yaml (``plugins:`` entries that name a ``.py`` file, relative to
    its folder; ddm.plugins), as paths relative to the repository root where they lie below it,
    sorted: every stage depends on them, as every rule's `code` param does. Module entries (on
    PYTHONPATH) are not deps."""
    params = yaml.safe_load(params_path.read_text()) if params_path.exists() else None
    entries = (params or {}).get("plugins") or [] if isinstance(params, dict) else []
    found = set()
    for entry in absolute([e for e in entries if isinstance(e, str) and is_file_entry(e)], params_path.parent):
        path = Path(entry)
        found.add(path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path))
    return sorted(found)


def code_deps(phase: dict) -> list[str]:
    """The package files (``ddm/...``) the phase's rules run: the modules their ``ddm`` subcommands
    import and the package data files those name (:func:`ddm.codedeps.command_files`), sorted."""
    return sorted({f for command in phase["rules"].values() for f in command_files(command, ROOT / "ddm")})


def render(phases: dict, sources: list[str] = (), plugins: list[str] = ()) -> str:
    lines = [HEADER.rstrip("\n"), "stages:"]
    for name, p in phases.items():
        metrics = list(p.get("metrics", []))
        plots = list(p.get("plots", []))
        plot_paths = [_plot_path(x) for x in plots]
        outs = [o for o in p["outs"] if o not in metrics and o not in plot_paths]
        lines.append(f"  {_scalar(name)}:")
        lines.append(f"    cmd: {SNAKEMAKE} --cores all {_scalar('phase_' + name)} ${ARGS_VAR}")
        lines.append("    deps:")
        extra = list(sources) if "prepare" in p["rules"] else []
        lines += [f"      - {_scalar(d)}" for d in _dedup([*p["deps"], *extra, *code_deps(p), *plugins, *CODE_DEPS])]
        if p["params"]:
            lines.append("    params:")
            lines += [f"      - {_scalar(k)}" for k in _dedup(p["params"])]
        if outs:
            lines.append("    outs:")
            for o in outs:
                lines.append(f"      - {_scalar(o)}:")
                lines.append("          persist: true")
                if o in UNCACHED:
                    lines.append("          cache: false  # large and regenerable: git-ignored, not cached")
                elif o in GIT_TRACKED:
                    lines.append("          cache: false  # small text: tracked by git, not the DVC cache")
        if metrics:
            lines.append("    metrics:")
            for m in metrics:
                lines.append(f"      - {_scalar(m)}:")
                lines.append("          persist: true")
                lines.append("          cache: false  # tracked by git: `dvc exp show` reads it from each experiment")
        if plots:
            lines.append("    plots:")
            for item in plots:
                pl = _plot_path(item)
                lines.append(f"      - {_scalar(pl)}:")
                lines.append("          persist: true")
                if pl in UNCACHED or pl in GIT_TRACKED:
                    lines.append("          cache: false")
                for k, v in _plot_props(item).items():
                    lines.append(f"          {_scalar(k)}: {_scalar(v)}")
    text = "\n".join(lines) + "\n"
    yaml.safe_load(text)  # the generator's own sanity check: it must be valid YAML
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 (with a diff) if dvc.yaml is not what would be written")
    ap.add_argument("--phases", type=Path, default=PHASES, help="phases file (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=DVC_YAML, help="dvc.yaml to write (default: %(default)s)")
    ap.add_argument("--params", type=Path, default=PARAMS,
                    help="params.yaml whose local dataset sources become deps (default: %(default)s)")
    args = ap.parse_args(argv)

    text = render(load_phases(args.phases), source_deps(args.params), plugin_deps(args.params))
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(True), text.splitlines(True), str(args.out), "generated"))
            print(f"{args.out} is out of date: run `python workflow/make_dvc_yaml.py`", file=sys.stderr)
            return 1
        return 0
    save_text(text, args.out)  # atomic, with the permissions the umask gives (ddm.io)
    return 0


if __name__ == "__main__":
    sys.exit(main())
