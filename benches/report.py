"""The report of `make bench`: a table and a chart of every suite's latest results.

Each benchmark suite writes one JSON object per scenario, one per line, to
`<results>/<suite>.jsonl` (`BENCH_RESULTS_DIR`, `build/bench/` under make):

  {"scenario": "h1-pipeline", "events_per_s": 3.1e7, "reference": "crossbeam ...",
   "reference_events_per_s": 1.5e7, "ratio": 2.01, "goal": 0.8,
   "ratio_min": 1.9, "ratio_max": 2.2}

(`ratio` is the median of the per-pair ratios, so it is not events_per_s divided by
reference_events_per_s; `ratio_min`/`ratio_max` are optional). This script reads
the suites named on the command line, in that order, and writes `results.md` (the
machine, the date and a table) and `throughput.png` (events/s of each scenario next
to its reference's, log scale) into the results directory. With `--update-doc`, it
instead puts that report, as written after the run (machine, date and commit of the
run), into the marked section of BENCHMARKS.md and copies the chart into benches/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

DOC_START = "<!-- bench-results:start -->"
DOC_END = "<!-- bench-results:end -->"


@dataclass
class Result:
    suite: str
    scenario: str
    events_per_s: float
    reference: str
    reference_events_per_s: float
    ratio: float
    goal: float
    ratio_min: Optional[float]
    ratio_max: Optional[float]

    @property
    def met(self) -> bool:
        return self.ratio >= self.goal


def load(results: Path, suites: List[str]) -> tuple[List[Result], List[str]]:
    """The results of `suites`, and a note per suite that wrote none."""
    found: List[Result] = []
    missing: List[str] = []
    for suite in suites:
        path = results / f"{suite}.jsonl"
        if not path.exists():
            missing.append(f"`bench-{suite}` wrote no `{path.name}`")
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                found.append(
                    Result(
                        suite=suite,
                        scenario=str(r["scenario"]),
                        events_per_s=float(r["events_per_s"]),
                        reference=str(r["reference"]),
                        reference_events_per_s=float(r["reference_events_per_s"]),
                        ratio=float(r["ratio"]),
                        goal=float(r["goal"]),
                        ratio_min=float(r["ratio_min"]) if "ratio_min" in r else None,
                        ratio_max=float(r["ratio_max"]) if "ratio_max" in r else None,
                    )
                )
            except (ValueError, KeyError, TypeError) as e:
                sys.exit(f"{path}:{number}: not a result record ({e}): {line}")
    return found, missing


def command_output(*argv: str) -> Optional[str]:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"{os.cpu_count()} vCPUs ({cpu})", f"{platform.system()} {platform.release()}"]
    for tool in (("rustc", "--version"), ("go", "version")):
        version = command_output(*tool)
        if version:
            parts.append(version.replace("go version go", "Go "))
    parts.append(f"Python {platform.python_version()}")
    try:
        load1, load5, _ = os.getloadavg()
        parts.append(f"load average {load1:.1f} / {load5:.1f} (1 / 5 min) when the report was made")
    except OSError:
        pass
    return ", ".join(parts)


def commit() -> str:
    sha = command_output("git", "rev-parse", "--short", "HEAD") or "unknown"
    dirty = command_output("git", "status", "--porcelain", "--untracked-files=no")
    return f"{sha} (with uncommitted changes)" if dirty else sha


def rate(value: float) -> str:
    if value >= 1e9:
        return f"{value / 1e9:.3g} G"
    if value >= 1e6:
        return f"{value / 1e6:.3g} M"
    return f"{value / 1e3:.3g} k"


def table(results: List[Result], missing: List[str], chart: Optional[str]) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Machine: {machine()}. Date: {now}. Commit `{commit()}`.",
        "",
        "| suite | scenario | events/s | reference | reference events/s | ratio (pairs min–max) | goal | met |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        spread = f" ({r.ratio_min:.2f}–{r.ratio_max:.2f})" if r.ratio_min is not None and r.ratio_max is not None else ""
        lines.append(
            f"| {r.suite} | {r.scenario} | {rate(r.events_per_s)} | {r.reference} | "
            f"{rate(r.reference_events_per_s)} | {r.ratio:.2f}{spread} | {r.goal:g} | {'yes' if r.met else '**no**'} |"
        )
    if missing:
        lines += ["", *(f"Not in this run: {m}." for m in missing)]
    if chart:
        lines += ["", f"![events/s of each scenario next to its reference]({chart})"]
    return "\n".join(lines).rstrip() + "\n"


def draw(results: List[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = [f"{r.scenario} ({r.suite})\n" + "\n".join(textwrap.wrap(f"vs {r.reference}", 44)) for r in results]
    height = 0.38
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.8 * len(results)))
    rows = list(range(len(results)))
    ax.barh([y - height / 2 for y in rows], [r.events_per_s for r in results], height, label="conveyor (median)",
            color="#2f6db5")
    ax.barh([y + height / 2 for y in rows], [r.reference_events_per_s for r in results], height,
            label="reference (median)", color="#b8b8b8")
    ax.set_xscale("log")
    ax.set_yticks(rows)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("events per second (log scale)")
    values = [v for r in results for v in (r.events_per_s, r.reference_events_per_s)]
    ax.set_xlim(10 ** math.floor(math.log10(min(values) / 2)), max(values) * 40)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: rate(v).replace(" ", "\u2009")))
    for y, r in zip(rows, results):
        mark = "met" if r.met else "NOT met"
        ax.text(max(r.events_per_s, r.reference_events_per_s) * 1.15, y,
                f"ratio {r.ratio:.2f}, goal {r.goal:g}: {mark}", va="center", fontsize=8,
                color="#1a7f37" if r.met else "#c62828")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Each scenario next to its reference, measured in the same run", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_doc(doc: Path, text: str) -> None:
    content = doc.read_text()
    start, end = content.find(DOC_START), content.find(DOC_END)
    if start < 0 or end < start:
        sys.exit(f"{doc}: the markers {DOC_START} and {DOC_END} are missing")
    doc.write_text(content[: start + len(DOC_START)] + "\n" + text + content[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("build/bench"), help="the suites' results directory")
    parser.add_argument("--update-doc", type=Path, help="copy the last report and chart into this markdown file")
    parser.add_argument("suites", nargs="*", help="suite names in report order (rust python go ...)")
    args = parser.parse_args()

    if args.update_doc:
        report, chart = args.results / "results.md", args.results / "throughput.png"
        if not report.exists() or not chart.exists():
            sys.exit(f"no report in {args.results}: run make bench (or make bench-chart) first")
        doc_chart = Path("benches") / chart.name
        shutil.copyfile(chart, doc_chart)
        update_doc(args.update_doc, report.read_text().replace(f"]({chart.name})", f"]({doc_chart})"))
        print(f"report: wrote {report} into {args.update_doc}, and {doc_chart}")
        return 0

    if not args.suites:
        parser.error("name the suites to report")
    results, missing = load(args.results, args.suites)
    if not results:
        sys.exit(f"no results in {args.results} for {', '.join(args.suites)}")
    chart = args.results / "throughput.png"
    draw(results, chart)
    (args.results / "results.md").write_text(table(results, missing, chart.name))
    print(table(results, missing, None), end="")
    print(f"report: {args.results / 'results.md'}, chart: {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
