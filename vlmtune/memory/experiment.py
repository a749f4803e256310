"""Memory in a run: reminders in every split, then the methods side by side after fine-tuning.

    splits = with_memory(cfg, splits, run_dir, ref)        # before training (the pipeline calls it)
    summary = compare_methods(cfg, run_dir, ref, task, adapter=run_dir / "adapter")   # after it

`with_memory` loads the base model once for the encoders (its vision tower, its captions for key expansion),
replays each split's episodes through the banks (`vlmtune.memory.episodes.Runner`) and returns the splits
with reminders injected:
- train: the same retriever as evaluation, mixed per example (seeded by memory.seed and the example id):
  retrieved evidence, oracle evidence, or the evidence removed with the abstain answer as the target
  (memory.mix), so the model learns to use reminders and to say it does not know;
- val, test: memory.method's reminders.
It also writes each compared method's test examples and their retrieval metrics under runs/<name>/memory/.
`compare_methods` evaluates the fine-tuned model on each method's examples, compares memory off ('none')
with memory on (memory.method) as a paired report (report/: McNemar, clustered over episodes, paired cluster
bootstrap, the minimum detectable difference), tests every method against 'none' on the same probes with
Holm-adjusted p-values over all of those tests (report_methods/, `vlmtune.report.compare_many`; when two or
more methods besides 'none' share its probes), and writes summary.md/json and plots/accuracy_by_distance.png
(one curve per method).

This module sits above `vlmtune.report` (it runs evaluations and writes a comparison report); the rest of
`vlmtune.memory` sits below `vlmtune.eval`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from vlmtune.config import RunConfig
from vlmtune.data.example import (
    Example,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_jsonl,
    write_jsonl,
)
from vlmtune.errors import ConfigError
from vlmtune.memory.episodes import Runner, RunnerSettings, read_episodes
from vlmtune.memory.measure import retrieval_metrics
from vlmtune.memory.reminder import TokenCounter, inject
from vlmtune.memory.toolkit import Toolkit
from vlmtune.models.load import ModelRef

log = logging.getLogger(__name__)

MIX_SOURCE = {"retrieved": None, "oracle": "oracle", "removed": "removed"}


def episodes_path(cfg: RunConfig, run_dir: Path) -> Path:
    """memory.episodes, else the synthesized episodes, else episodes.jsonl beside the data file."""
    if cfg.memory.episodes:
        return Path(cfg.memory.episodes)
    if cfg.data.source == "synth":
        return run_dir / "data" / "source" / "episodes.jsonl"
    data_file = cfg.data.path or cfg.data.test or cfg.data.train
    if data_file is None:  # data.source=hf: no file for episodes.jsonl to sit beside
        raise ConfigError(
            f"memory needs episodes, and data.source={cfg.data.source} has no data file beside which to "
            "find episodes.jsonl. Fix: set memory.episodes to the episodes.jsonl written with your probes"
        )
    p = Path(data_file)
    return (p if p.is_dir() else p.parent) / "episodes.jsonl"


def default_window(model: Any) -> int:
    """History tokens the full/truncated methods may use: the model's positions minus room for the question."""
    cfg = getattr(model, "config", None)
    text = getattr(cfg, "text_config", None) or cfg
    positions = getattr(text, "max_position_embeddings", None) or 2048
    return max(int(positions) - 64, 64)


def mix_mode(seed: int, example_id: str, mix: dict[str, float]) -> str:
    """retrieved | oracle | removed, drawn from memory.mix by a hash of (seed, id): the same on every run."""
    u = int(hashlib.sha256(f"{seed}-{example_id}".encode()).hexdigest()[:12], 16) / float(1 << 48)
    acc = 0.0
    for mode in ("retrieved", "oracle", "removed"):
        acc += mix.get(mode, 0.0)
        if u < acc:
            return mode
    return "retrieved"


def abstaining(ex: Example, answer: str) -> Example:
    msgs = [dict(m) for m in ex.messages]
    if msgs and msgs[-1]["role"] == "assistant":
        msgs[-1]["content"] = answer
    return dataclasses.replace(ex, messages=msgs, target=answer, meta={**ex.meta, "original_target": ex.target})


def _runner(cfg: RunConfig, ref: ModelRef) -> tuple[Runner, Any]:
    from vlmtune.models.load import dir_hash, load_model

    model, processor = load_model(ref)
    m = cfg.memory
    kit = Toolkit.build(
        m.text_encoder,
        m.image_encoder,
        caption=m.caption_images,
        model=model,
        processor=processor,
        model_hash=dir_hash(ref.path),
        caption_tokens=m.caption_tokens,
    )
    return Runner(kit, TokenCounter(processor), RunnerSettings.from_config(m, window=default_window(model))), model


def with_memory(
    cfg: RunConfig, splits: dict[str, list[Example]], run_dir: Path, ref: ModelRef
) -> dict[str, list[Example]]:
    """The splits with reminders (module docstring); the compared methods' test examples under run_dir/memory/."""
    m = cfg.memory
    path = episodes_path(cfg, run_dir)
    episodes = read_episodes(path)
    missing = [ex.id for s in splits.values() for ex in s if "episode" not in ex.meta]
    if missing:
        raise ConfigError(
            f"memory.enabled needs examples that name their episode (meta.episode, meta.turn); "
            f"'{missing[0]}' does not. Fix: use probes written with their episodes (data.task=memory "
            "synthesizes them; `vlmtune memory build` converts LoCoMo / VisDial)"
        )
    runner, model = _runner(cfg, ref)
    log.info(
        f"[memory] {len(episodes)} episodes from {path}; retrieval '{m.method}', k={m.k}, "
        f"budget {m.token_budget} tokens, window {runner.s.window}"
    )
    out_dir = run_dir / "memory"
    method = m.method
    train_out = runner.run(episodes, splits["train"], sorted({method, "oracle", "removed"}))
    mixed = []
    for i, ex in enumerate(splits["train"]):
        mode = mix_mode(m.seed, ex.id, m.mix)
        if mode == "removed" and not ex.meta.get("evidence"):
            mode = "retrieved"
        o = train_out[MIX_SOURCE[mode] or method][i]
        new = inject(ex, o.reminder, {**o.record, "mix": mode})
        mixed.append(abstaining(new, m.abstain) if mode == "removed" else new)
    result = {"train": mixed}
    for name in ("val", "test"):
        outs = runner.run(episodes, splits[name], [method])[method]
        result[name] = [inject(ex, o.reminder, o.record) for ex, o in zip(splits[name], outs)]
    for name, exs in result.items():
        write_jsonl(out_dir / "data" / f"{name}.jsonl", exs)
    methods = list(dict.fromkeys(m.compare))
    if methods:
        compared = runner.run(episodes, splits["test"], methods)
        retrieval = {}
        for meth, outs in compared.items():
            exs = [
                inject(ex, o.reminder, o.record)
                for ex, o in zip(splits["test"], outs)
                if meth != "full" or o.record.get("fits")
            ]
            write_jsonl(out_dir / "methods" / meth / "examples.jsonl", exs)
            kept = [(ex, o) for ex, o in zip(splits["test"], outs) if meth != "full" or o.record.get("fits")]
            retrieval[meth] = retrieval_metrics(
                [ex for ex, _ in kept], [o for _, o in kept], n_boot=cfg.eval.n_boot, seed=cfg.data.seed, by="bucket"
            )
        atomic_write_json(out_dir / "retrieval.json", retrieval)
    counts = {mode: sum(1 for ex in mixed if ex.meta["memory"]["mix"] == mode) for mode in MIX_SOURCE}
    log.info(f"[memory] train mix {counts}; examples with reminders -> {out_dir / 'data'}")
    del model
    return result


def compare_methods(
    cfg: RunConfig, run_dir: Path, ref: ModelRef, task: Any, *, adapter: Path | None, resume: bool = False
) -> dict[str, Any]:
    """Evaluate the fine-tuned model with each compared method; the paired on/off report; summary and plot.
    With `resume`, a method whose evaluation finished (its metrics.json) is read back, not run again."""
    from vlmtune.eval.run import evaluate
    from vlmtune.models.load import load_model
    from vlmtune.report import compare_runs

    out_dir = run_dir / "memory"
    loaded = None
    metrics: dict[str, dict[str, Any]] = {}
    for meth in dict.fromkeys(cfg.memory.compare):
        path, done = out_dir / "methods" / meth / "examples.jsonl", out_dir / "methods" / meth / "metrics.json"
        if resume and done.exists():
            metrics[meth] = json.loads(done.read_text(encoding="utf-8"))["metrics"]
            continue
        exs = load_jsonl(path) if path.exists() and path.stat().st_size else []
        if not exs:
            log.info(f"[memory] method {meth}: no test probe fits; not evaluated")
            continue
        loaded = loaded or load_model(ref, adapter=adapter)  # once, and only when something is left to evaluate
        metrics[meth] = evaluate(
            *loaded,
            exs,
            task,
            out_dir / "methods" / meth,
            label=f"memory {meth}",
            ref=ref,
            ecfg=cfg.eval,
            adapter=str(adapter) if adapter else None,
        )["metrics"]
    del loaded
    retrieval = json.loads((out_dir / "retrieval.json").read_text()) if (out_dir / "retrieval.json").exists() else {}
    summary: dict[str, Any] = {
        "methods": {k: {"metrics": v, "retrieval": retrieval.get(k, {})} for k, v in metrics.items()}
    }
    on = cfg.memory.method
    if "none" in metrics and on in metrics:
        cmp = compare_runs(
            out_dir / "methods" / "none",
            out_dir / "methods" / on,
            out_dir / "report",
            title=f"memory off vs on ({on}): {cfg.name}",
            allow_mismatch=True,
            n_boot=cfg.eval.n_boot,
            seed=cfg.data.seed,
        )
        summary["on_vs_off"] = {"method": on, **{k: cmp.get(k) for k in ON_VS_OFF_KEYS}}
    if (against := methods_vs_none(cfg, out_dir, list(metrics))) is not None:
        summary["methods_vs_none"] = against
    atomic_write_bytes(
        out_dir / "plots" / "accuracy_by_distance.png",
        plot_by_distance({k: v for k, v in metrics.items()}, title=f"{cfg.name}: accuracy against distance"),
    )
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_write_text(out_dir / "summary.md", summary_markdown(summary))
    log.info(f"[memory] methods compared -> {out_dir / 'summary.md'}")
    return summary


ON_VS_OFF_KEYS = (
    "accuracy_difference",
    "mcnemar",
    "mcnemar_clustered",
    "headline_test",
    "tests",
    "mde",
    "flips",
    "n",
    "clusters",
    "report_md",
)


def methods_vs_none(cfg: RunConfig, out_dir: Path, methods: list[str]) -> dict[str, Any] | None:
    """Every evaluated method against memory off ('none'), paired on the same probes, p-values Holm-adjusted over
    all the tests (report_methods/). Methods evaluated on other probes ('full' keeps only histories that fit) are
    left out and named. None when fewer than two methods besides 'none' share its probes (the on/off report then
    covers the one pair)."""
    from vlmtune.report import compare_many
    from vlmtune.report.load import load_eval_dir

    if "none" not in methods:
        return None
    runs = {m: load_eval_dir(out_dir / "methods" / m, f"memory {m}") for m in methods}
    probes = {m: [r["id"] for r in run.rows] for m, run in runs.items()}
    same = [m for m in methods if m != "none" and sorted(probes[m]) == sorted(probes["none"])]
    if len(same) < 2:
        return None
    other = [m for m in methods if m != "none" and m not in same]
    res = compare_many(
        [out_dir / "methods" / m for m in ["none", *same]],
        out_dir / "report_methods",
        labels=["none", *same],
        reference=0,
        title=f"memory methods against memory off: {cfg.name}",
        allow_mismatch=True,
        n_boot=cfg.eval.n_boot,
        seed=cfg.data.seed,
    )
    if other:
        log.info(f"[memory] not in the pairwise tests (evaluated on other probes): {', '.join(other)}")
    return {
        "tests": res["tests"],
        "n": res["n"],
        "clusters": res["clusters"],
        "left_out": other,
        "report_md": res["report_md"],
    }


def _cell(e: Any) -> str:
    """value [interval] n=, and the interval's method by its short name (summary.json has it in full)."""
    if not isinstance(e, dict) or "value" not in e:
        return "-"
    from vlmtune.report.fmt import ci_str, num

    method = str(e.get("method", "")).split(" (")[0]
    return f"{num(e['value'])} {ci_str(e.get('ci'))} n={e['n']}" + (f", {method}" if method else "")


def summary_markdown(summary: dict[str, Any]) -> str:
    from vlmtune.memory.measure import BUCKETS

    lines = [
        "# Memory methods side by side",
        "",
        "Accuracy (95% interval, n, the interval's method) of the fine-tuned model with each method's reminders; "
        "retrieval recall@5 and MRR of the evidence; the reminder's share of the history's tokens. Probes of one "
        "episode count as one cluster; summary.json names every interval's method in full.",
        "",
        "| method | accuracy | "
        + " | ".join(f"distance {b}" for b in BUCKETS)
        + " | recall@5 | MRR | injected share |",
        "|---" * (len(BUCKETS) + 5) + "|",
    ]
    for meth, d in summary["methods"].items():
        m, r = d["metrics"], d["retrieval"]
        lines.append(
            f"| {meth} | {_cell(m.get('accuracy'))} | "
            + " | ".join(_cell(m.get(f"accuracy_distance_{b}")) for b in BUCKETS)
            + f" | {_cell(r.get('recall@5'))} | {_cell(r.get('mrr'))} | {_cell(r.get('injected_share'))} |"
        )
    if "on_vs_off" in summary:
        lines += ["", on_vs_off_line(summary["on_vs_off"])]
    if "methods_vs_none" in summary:
        lines += ["", *methods_vs_none_lines(summary["methods_vs_none"])]
    return "\n".join(lines) + "\n"


def methods_vs_none_lines(d: dict[str, Any]) -> list[str]:
    """The pairwise tests of every method against 'none' as a Markdown table, raw and Holm-adjusted p."""
    from vlmtune.report.fmt import ci_str, format_p, n_text

    tests = d["tests"]
    lines = [
        f"Every method against memory off (none), paired over n = {n_text(d['n'], d['clusters'])} probes; "
        f"{len(tests)} tests, so judge each by its Holm-adjusted p (the chance of any false positive among "
        f"them held at 5%). Report: {d['report_md']}",
        "",
        "| method | compared | difference [95% CI] | test | p | p, Holm |",
        "|---|---|---|---|---|---|",
    ]
    for t in tests:
        lines.append(
            f"| {t['pair'][1]} | {t['metric']} | {t['diff']:+.3f} {ci_str(t['ci'])} | {t['test']} | "
            f"{format_p(t['p_value'])} | {format_p(t['p_holm'])} |"
        )
    if d.get("left_out"):
        lines += ["", f"Not tested here (evaluated on other probes): {', '.join(d['left_out'])}."]
    return lines


def on_vs_off_line(d: dict[str, Any]) -> str:
    """Memory off vs on in one line: the paired accuracy difference with its interval and method; the McNemar test
    the conclusion rests on (clustered when probes of one episode share a group; exact beside it); the
    Holm-adjusted p when the report tested more than accuracy; the minimum detectable difference."""
    from vlmtune.report.fmt import ci_str, format_p, mde_text, n_text

    diff, mc, flips = d.get("accuracy_difference") or {}, d.get("mcnemar") or {}, d.get("flips") or {}
    head = d.get("headline_test") or {
        "key": "mcnemar",
        "method": mc.get("method", "McNemar"),
        "p_value": mc.get("p_value"),
    }
    test = f"{head['method']}: p = {format_p(head['p_value'])}"
    if head["key"] != "mcnemar":
        test += f" (exact McNemar, ignoring episodes: p = {format_p(mc.get('p_value'))})"
    tests = d.get("tests") or []
    if len(tests) > 1:
        test += f", Holm-adjusted over {len(tests)} tests p = {format_p(tests[0]['p_holm'])}"
    mde = f"; minimum detectable difference {mde_text(d['mde'])} (80% power)" if d.get("mde") else ""
    return (
        f"memory off vs on ({d.get('method')}), paired over n={n_text(d.get('n'), d.get('clusters'))} probes: "
        f"accuracy difference {diff.get('diff', float('nan')):+.3f} {ci_str(diff.get('ci'))} "
        f"({diff.get('method', 'paired bootstrap')}); {test} ({flips.get('fixed', 0)} fixed, "
        f"{flips.get('broken', 0)} broken){mde}; report: {d.get('report_md')}"
    )


def plot_by_distance(
    series: dict[str, dict[str, Any]], *, key: str = "accuracy_distance_{b}", title: str = "accuracy against distance"
) -> bytes:
    """One curve per method: the metric per distance bucket (from metrics dicts), with its 95% interval."""
    from vlmtune.memory.measure import BUCKETS
    from vlmtune.report.plots import draw

    def plot(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        for j, (method, metrics) in enumerate(series.items()):
            points = [
                (i + (j - len(series) / 2) * 0.03, e)
                for i, b in enumerate(BUCKETS)
                if isinstance(e := metrics.get(key.format(b=b)), dict) and e.get("n")
            ]
            if points:
                ax.errorbar(
                    [x for x, _ in points],
                    [e["value"] for _, e in points],
                    marker="o",
                    capsize=2,
                    label=method,
                    yerr=[[e["value"] - e["ci"][0] for _, e in points], [e["ci"][1] - e["value"] for _, e in points]],
                )
        ax.set_xticks(range(len(BUCKETS)), BUCKETS)
        ax.set_xlabel("turns from the evidence to the probe")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.legend(fontsize=7, ncol=2)

    return draw(plot, (7.5, 4.2))
