"""Several evaluations of the same examples (three training recipes, memory methods side by side) -> one report
of pairwise tests, Holm-adjusted over all of them.

    mc = compare_several([load_eval_dir(d) for d in dirs], labels=["(a) gold", "(b) +reminder", "(c) teacher"])
    many_sections(mc, pngs)          # what report.md / report.html say
    mc.to_json(), mc.summary(out)    # comparison.json; what `format_many_summary` prints

Every pair of runs (or, with `reference`, each run against that one) gets the tests a two-run report has
(`vlmtune.report.paired`): the headline McNemar on accuracy (clustered when examples share groups, exact
otherwise, with exact shown beside it), a paired (cluster) bootstrap interval of the accuracy difference, the
minimum detectable difference, and a paired (cluster) bootstrap of each per-example value the task defines.
Testing many pairs and metrics at once raises the chance that one of them looks significant by luck, so every
p-value is shown raw and Holm-adjusted over all tests of the report. Runs must agree on everything but the
weights, as in a two-run comparison (`allow_mismatch` lists the differences instead).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmtune.errors import ConfigError, VlmtuneError
from vlmtune.report.compare import (
    PREDICTIONS_PAGE,
    fingerprint_differences,
    flatten,
    metric_sources,
    metric_table,
    pair_rows,
    run_info,
    run_labels,
    task_of,
)
from vlmtune.report.fmt import MISSING, ci_str, entry_cell, format_p, jsonable, mde_text, method_of, n_text, show
from vlmtune.report.load import EvalRun, Row
from vlmtune.report.paired import ALPHA, POWER, family, holm_family, pair_tests, shared_groups
from vlmtune.report.render import Plot, Section, Table, metrics_section, predictions_link, runs_section


@dataclass
class MultiComparison:
    """Everything a report on several runs shows; comparison.json is its plain-JSON form."""

    title: str
    runs: list[dict[str, Any]]  # run_info of each run, in the order given
    metrics: list[dict[str, Any]]  # [{"name", "entries": [one per run]}]
    pairs: list[dict[str, Any]]  # [{"baseline", "candidate" (labels), "tests": pair_tests(...)}]
    family: list[dict[str, Any]]  # every pair's tests with "pair", "p_value" and "p_holm"
    fingerprint_differences: list[dict[str, Any]]  # [{"run", "key", "reference", "value"}] against the first run
    fingerprints: list[dict[str, Any]]
    notes: list[str]
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    confusions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    rows: list[list[Row]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [str(r["label"]) for r in self.runs]

    def to_json(self) -> dict[str, Any]:
        first = self.pairs[0]["tests"]["accuracy"]
        return jsonable(
            {
                "title": self.title,
                "runs": self.runs,
                "metrics": self.metrics,
                "n": first["n"],
                "clusters": first["clusters"],
                "pairs": self.pairs,
                "tests": self.family,
                "predictions": PREDICTIONS_PAGE,
                "metric_sources": self.sources,
                "fingerprint_differences": self.fingerprint_differences,
                "notes": self.notes,
                "plots": self.plots,
            }
        )

    def summary(self, out_dir: str | Path) -> dict[str, Any]:
        out = Path(out_dir)
        acc = next(m for m in self.metrics if m["name"] == "accuracy")
        first = self.pairs[0]["tests"]["accuracy"]
        return {
            "runs": [{"label": label, "accuracy": e} for label, e in zip(self.labels, acc["entries"])],
            "n": first["n"],
            "clusters": first["clusters"],
            "tests": self.family,
            "pairs": [
                {
                    "baseline": p["baseline"],
                    "candidate": p["candidate"],
                    "headline_test": p["tests"]["headline"],
                    "mde": p["tests"]["accuracy"]["mde"],
                }
                for p in self.pairs
            ],
            "report_md": str(out / "report.md"),
            "report_html": str(out / "report.html"),
            "comparison_json": str(out / "comparison.json"),
            "predictions_html": str(out / PREDICTIONS_PAGE),
            "fingerprint_differences": self.fingerprint_differences,
        }


def compare_several(
    runs: Sequence[EvalRun],
    *,
    labels: Sequence[str] | None = None,
    reference: int | None = None,
    title: str = "vlmtune report",
    allow_mismatch: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
) -> MultiComparison:
    """Pair every run's rows with the first's, refuse unfair comparisons, test every pair (or each run against
    runs[reference]) and adjust all p-values together; nothing is written."""
    if len(runs) < 2:
        raise ConfigError(f"compare needs at least two evaluations, got {len(runs)}")
    if reference is not None and not 0 <= reference < len(runs):
        raise ConfigError(f"reference must index one of the {len(runs)} runs, got {reference}")
    names = run_labels(runs, labels)
    rows = [list(runs[0].rows)] + [[b for _, b in pair_rows(runs[0], run)] for run in runs[1:]]
    diffs = [
        {"run": name, "key": d["key"], "reference": d["baseline"], "value": d["candidate"]}
        for run, name in zip(runs[1:], names[1:])
        for d in fingerprint_differences(runs[0], run)
    ]
    if diffs and not allow_mismatch:
        lines = "\n".join(
            f"  {d['run']}: {d['key']} is {show(d['value'])}, {names[0]} has {show(d['reference'])}" for d in diffs
        )
        raise VlmtuneError(
            f"the runs differ in more than the model weights, so their scores are not comparable:\n"
            f"{lines}\nRe-run the evaluations with the same settings, or pass --allow-mismatch to "
            "compare anyway (the differences are then listed at the top of the report)."
        )
    notes: list[str] = []
    groups = shared_groups(rows, names, notes)
    table = metric_table(runs, rows, groups, notes)
    task = task_of(runs[-1], notes)
    index_pairs = (
        [(reference, j) for j in range(len(runs)) if j != reference]
        if reference is not None
        else list(itertools.combinations(range(len(runs)), 2))
    )
    pairs, tests = [], []
    for i, j in index_pairs:
        pt = pair_tests(rows[i], rows[j], groups, task, n_boot=n_boot, seed=seed)
        pairs.append({"baseline": names[i], "candidate": names[j], "tests": pt})
        tests += family(pt, pair=(names[i], names[j]))
    infos = []
    for run, name, rs in zip(runs, names, rows):
        infos.append({**run_info(run, rs), "label": name})
    return MultiComparison(
        title=title,
        runs=infos,
        metrics=table,
        pairs=jsonable(pairs),
        family=holm_family(tests),
        fingerprint_differences=jsonable(diffs),
        fingerprints=[run.fingerprint for run in runs],
        notes=notes,
        sources=metric_sources(runs, names),
        confusions=[
            (name, run.metrics["confusion"])
            for run, name in zip(runs, names)
            if isinstance(run.metrics.get("confusion"), dict)
        ],
        rows=rows,
    )


# ----------------------------------------------------------------------------------------------
# What the report says


def many_sections(mc: MultiComparison, pngs: dict[str, bytes]) -> list[Section]:
    """The report on several runs as sections, in reading order."""
    out: list[Section] = []
    if mc.fingerprint_differences:
        out.append(
            Section(
                style="warning",
                text=[
                    f"**⚠ These runs differ from {mc.labels[0]} in more than the model weights (compared with "
                    "--allow-mismatch).** The differences below can change scores by themselves:"
                ],
                table=Table(
                    ["run", "setting", mc.labels[0], "this run"],
                    [[d["run"], d["key"], show(d["reference"]), show(d["value"])] for d in mc.fingerprint_differences],
                    code=frozenset({1, 2, 3}),
                ),
            )
        )
    out.append(Section(style="headline", items=many_headline(mc), notes=mc.notes))
    out.append(runs_section(mc.runs, roles=[str(i + 1) for i in range(len(mc.runs))]))
    out.append(metrics_section(mc.metrics, mc.labels, mc.sources))
    out.append(pairwise_section(mc))
    if pngs:
        out.append(Section("Plots", plots=[Plot(Path(n).stem, f"plots/{n}", png) for n, png in pngs.items()]))
    out.append(Section("Predictions", text=[predictions_link(mc.labels)]))
    flat = [flatten(fp) for fp in mc.fingerprints]
    keys = sorted(set().union(*flat))
    out.append(
        Section(
            "Fingerprints",
            fold="everything the scores depend on",
            table=Table(
                ["key", *mc.labels],
                [[k, *(show(f.get(k, MISSING)) for f in flat)] for k in keys],
                code=frozenset({0}),
                text=frozenset(range(1, len(mc.labels) + 1)),
            ),
        )
    )
    return out


def many_headline(mc: MultiComparison) -> list[str]:
    acc = next(m for m in mc.metrics if m["name"] == "accuracy")
    first = mc.pairs[0]["tests"]
    lines = [
        f"Accuracy (n = {n_text(first['accuracy']['n'], first['accuracy']['clusters'])}; 95% intervals): "
        + "; ".join(f"{label} {entry_cell(e)}" for label, e in zip(mc.labels, acc["entries"]))
        + "."
    ]
    lines.append(
        f"{len(mc.pairs)} pairwise comparison(s), {len(mc.family)} test(s) in all. Accuracy is tested with "
        f"the {first['headline']['method']}: {first['headline']['why']}."
    )
    if len(mc.family) > 1:
        hits = [t for t in mc.family if t["p_holm"] is not None and t["p_holm"] <= ALPHA]
        found = (
            "; ".join(
                f"{t['pair'][0]} → {t['pair'][1]}: {t['metric']} {t['diff']:+.3f}, Holm p = {format_p(t['p_holm'])}"
                for t in hits
            )
            or "none"
        )
        lines.append(f"Significant at {ALPHA:.0%} after Holm's adjustment over all {len(mc.family)} tests: {found}.")
    mdes = [p["tests"]["accuracy"]["mde"]["mde"] for p in mc.pairs]
    known = [m for m in mdes if m is not None]
    if known:
        lines.append(
            f"Minimum detectable accuracy difference at {POWER:.0%} power: {min(known):.3f} to "
            f"{max(known):.3f} across the pairs (it depends on how many examples the two runs disagree "
            "on). A pair that is not significant may still differ by less than that: the test set is too "
            "small to tell, which is not evidence that the runs are equal."
        )
    return lines


def pairwise_section(mc: MultiComparison) -> Section:
    """One row per test: the pair, what is compared, both values, the difference with its interval and method,
    the test, raw and Holm-adjusted p-values, and for accuracy the minimum detectable difference."""
    by_pair = {(p["baseline"], p["candidate"]): p["tests"] for p in mc.pairs}
    acc_entries = dict(zip(mc.labels, next(m for m in mc.metrics if m["name"] == "accuracy")["entries"]))
    header = [
        "pair (A → B)",
        "compared",
        "A",
        "B",
        "B − A [95% CI]",
        "n",
        "interval",
        "test",
        "p",
        f"p, Holm ({len(mc.family)} tests)",
        f"min. detectable difference ({POWER:.0%} power)",
    ]
    rows = []
    for t in mc.family:
        a, b = t["pair"]
        pt = by_pair[(a, b)]
        if t["metric"] == "accuracy":
            values = [entry_cell(acc_entries[a]), entry_cell(acc_entries[b])]
            test = t["test"]
            if pt["accuracy"]["mcnemar_clustered"] is not None:
                test += f"; exact McNemar p = {format_p(pt['accuracy']['mcnemar']['p_value'])} (ignores groups)"
            mde = mde_text(pt["accuracy"]["mde"])
        else:
            p = next(x for x in pt["per_example"] if x["name"] == t["metric"])
            values, test, mde = [f"{p['baseline']:.3f}", f"{p['candidate']:.3f}"], "bootstrap p (same resamples)", "—"
        rows.append(
            [
                f"{a} → {b}",
                t["metric"],
                *values,
                f"{t['diff']:+.3f} {ci_str(t['ci'])}",
                n_text(t["n"], t["clusters"]),
                t["interval"],
                test,
                format_p(t["p_value"]),
                format_p(t["p_holm"]) if t["p_holm"] is not None else "—",
                mde,
            ]
        )
    text = [
        "Each pair is compared on the same examples. Accuracy: the McNemar test the report relies on (clustered "
        "when examples share groups), with a paired (cluster) bootstrap interval of the difference; per-example "
        "values (the task's): a paired (cluster) bootstrap over the examples both runs have a value for."
    ]
    if len(mc.family) > 1:
        text.append(
            f"With {len(mc.family)} tests, some p-value below 5% is likely by chance alone; Holm's adjusted "
            "p-values keep the chance of any false positive among them at 5%. Judge significance by those."
        )
    return Section("Pairwise tests", text=text, table=Table(header, rows, text=frozenset({6, 7})))


def format_many_summary(summary: dict[str, Any]) -> str:
    """Console lines for a comparison of several runs: each accuracy, then every test with raw and Holm p."""
    width = max(len(r["label"]) for r in summary["runs"])
    lines = [
        f"{r['label']:<{width}}  accuracy {entry_cell(r['accuracy'])}  (n = "
        f"{n_text(r['accuracy'].get('n'), r['accuracy'].get('clusters'))}; {method_of(r['accuracy'])})"
        for r in summary["runs"]
    ]
    tests = summary["tests"]
    lines.append(f"{len(tests)} paired test(s), p raw and Holm-adjusted over all of them:")
    for t in tests:
        holm_p = f", Holm {format_p(t['p_holm'])}" if t.get("p_holm") is not None else ""
        lines.append(
            f"  {t['pair'][0]} -> {t['pair'][1]}  {t['metric']} {t['diff']:+.3f} {ci_str(t['ci'])}  "
            f"p = {format_p(t['p_value'])}{holm_p}  ({t['test']})"
        )
    mdes = [p["mde"]["mde"] for p in summary["pairs"] if p["mde"].get("mde") is not None]
    if mdes:
        lines.append(
            f"minimum detectable accuracy difference {min(mdes):.3f}-{max(mdes):.3f} (80% power, 5% level): "
            "smaller true differences usually test as not significant"
        )
    if summary.get("fingerprint_differences"):
        keys = ", ".join(sorted({d["key"] for d in summary["fingerprint_differences"]}))
        lines.append(f"WARNING: the runs also differ in {keys} (--allow-mismatch); see the report")
    lines.append(f"report: {summary['report_html']}")
    return "\n".join(lines)
