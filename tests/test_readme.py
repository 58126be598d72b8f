"""The README is a front door: short, the two commands first, and every link in it (and in docs/)
leads somewhere.

- README.md is at most 250 lines; measurements, timings and reruns live in docs/ (reached by link).
- Its first screen (first 40 lines) holds the two commands for a fresh machine: the set-up that
  runs the embedded default, and the test command, which is the one .ci/run runs (CI adds only
  reporting options such as ``--durations``).
- Every relative link of README.md and docs/*.md (``[text](path#anchor)``, ``<img src=...>``)
  names an existing file, and an ``#anchor`` names a heading of that file by GitHub's slug rules
  (lower case, punctuation dropped, spaces to hyphens, ``-1``, ``-2`` for repeats). Absolute
  http(s) links are not fetched.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_LINES = 250
FIRST_SCREEN = 40
SETUP_COMMAND = "./setup.sh && .venv/bin/snakemake all"
TEST_COMMAND = ".venv/bin/python -m pytest -q"

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def prose_lines(text: str, blank_code_spans: bool = True) -> list[str]:
    """The lines outside fenced code blocks (those inside come back empty); inline code spans
    blanked unless asked not to (a link there is code; a heading keeps its code's text)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else re.sub(r"`[^`]*`", "``", line) if blank_code_spans else line)
    return out


def code_blocks(text: str, lang: str) -> list[list[str]]:
    return [b.splitlines() for b in re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, every character but letters,
    digits, '_', '-' and spaces dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    kept = "".join(c for c in text if c in "_- " or unicodedata.category(c)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path.read_text(encoding="utf-8"), blank_code_spans=False):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    out |= set(re.findall(r"""<a\s+(?:name|id)=["']([^"']+)["']""", path.read_text(encoding="utf-8")))
    return out


def links(path: Path) -> list[tuple[int, str]]:
    text = "\n".join(prose_lines(path.read_text(encoding="utf-8")))
    found = [(m.start(), m.group(1)) for m in LINK.finditer(text)]
    found += [(m.start(), m.group(1)) for m in HTML_LINK.finditer(text)]
    return [(text.count("\n", 0, pos) + 1, target) for pos, target in sorted(found)]


def test_slug_follows_githubs_rules():
    assert slug("Latent super-resolution (§5.1's latent path, embedded)") == \
        "latent-super-resolution-51s-latent-path-embedded"
    assert slug("The paper preset (`conditioned_presets.paper`)") == "the-paper-preset-conditioned_presetspaper"
    assert slug("Tables 2 and 3 (conditioned generation)") == "tables-2-and-3-conditioned-generation"
    assert slug("Local runs on a machine with SLURM's client only") == \
        "local-runs-on-a-machine-with-slurms-client-only"
    assert slug("Table 1: the embedded run") == "table-1-the-embedded-run"


def test_the_readme_is_at_most_250_lines():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines; move details to docs/ (at most {MAX_LINES})"


def test_the_first_screen_holds_the_two_commands():
    screen = "\n".join(README.read_text(encoding="utf-8").splitlines()[:FIRST_SCREEN]) + "\n"
    blocks = code_blocks(screen, "bash")
    assert blocks, f"no ```bash block in the README's first {FIRST_SCREEN} lines"
    commands = [ln.split("#", 1)[0].strip() for ln in blocks[0] if ln.split("#", 1)[0].strip()]
    assert commands == [SETUP_COMMAND, TEST_COMMAND], blocks[0]


def test_the_first_screen_gives_every_claims_verdict():
    """The verdict of each claim of ddm.claims, as the last measured converged run with ablations
    judged it: benchmarks/run_summary.py's block, whole, inside the first screen."""
    from ddm.claims import VERDICTS

    lines = README.read_text(encoding="utf-8").splitlines()
    begin, end = "<!-- generated by benchmarks/run_summary.py: verdicts -->", "<!-- end of generated block: verdicts -->"
    assert begin in lines and end in lines, "no verdict block in README.md (benchmarks/run_summary.py --verdicts)"
    assert lines.index(end) < FIRST_SCREEN, f"the verdict block ends past the first {FIRST_SCREEN} lines"
    block = lines[lines.index(begin) + 1:lines.index(end)]
    words = [re.fullmatch(r"- .+: \*\*(.+)\*\*", ln) for ln in block]
    assert len(block) == 7 and all(w and w.group(1) in VERDICTS for w in words), block


def test_the_readme_test_command_is_what_ci_runs():
    ci = [ln.split("#", 1)[0].strip() for ln in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    pytest_lines = [shlex.split(ln) for ln in ci if re.search(r"-m\s+pytest\b", ln)]
    assert len(pytest_lines) == 1, f".ci/run should run pytest once: {pytest_lines}"
    readme = shlex.split(TEST_COMMAND)
    ci_test = pytest_lines[0]
    assert ci_test[:len(readme)] == readme, (ci_test, readme)
    extra = ci_test[len(readme):]
    assert all(re.fullmatch(r"--durations=\d+", a) for a in extra), \
        f".ci/run's tests differ from the README's by more than reporting options: {extra}"
    # and CI sets up as the README's first command does
    assert "./setup.sh" in ci
    assert SETUP_COMMAND.split(" && ")[0] == "./setup.sh"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves(path):
    broken = []
    for line, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I):  # http(s), mailto: not fetched
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"line {line}: {target} (no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest})")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"line {line}: {target} (no heading with anchor #{anchor} in {dest.name})")
    assert not broken, f"{path.relative_to(REPO)}:\n" + "\n".join(broken)


def test_the_readme_links_to_the_moved_details():
    targets = {t.partition("#")[0] for _, t in links(README)}
    for doc in ("docs/results.md", "docs/measurements.md", "docs/conditioned.md", "docs/training.md"):
        assert doc in targets, f"README.md does not link to {doc}"


COMMIT = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def command_costs() -> dict[str, str]:
    """docs/measurements.md's table of what each documented command costs: command -> cost."""
    text = (REPO / "docs" / "measurements.md").read_text(encoding="utf-8")
    section = text[text.index("## What each documented command costs"):]
    section = section[:section.index("\n## ", 1)]
    rows = [ln.split("|")[1:3] for ln in section.splitlines() if ln.startswith("| `")]
    return {cmd.strip().strip("`"): cost.strip() for cmd, cost in rows}


def test_the_readme_states_each_commands_cost_once_as_measured():
    """Each cost of docs/measurements.md's table is written in the README exactly once (the same
    figure everywhere), and the README carries no commit hash, date or load average: those live
    in docs/measurements.md and docs/results.md, which it links to."""
    costs = command_costs()
    assert len(costs) >= 4 and ".venv/bin/snakemake all" in costs, costs
    readme = README.read_text(encoding="utf-8")
    for command, cost in costs.items():
        assert readme.count(cost) == 1, f"README.md states {command!r}'s cost {cost!r} {readme.count(cost)} times"
    assert "docs/measurements.md#what-each-documented-command-costs" in readme
    dated = [m.group() for rx in (COMMIT, DATE, re.compile(r"load average")) for m in rx.finditer(readme)]
    assert not dated, f"README.md dates itself: {dated}"
