"""`vlmtune ui`: a web app over runs/ (Gradio; the `ui` extra).

    vlmtune ui --runs runs --port 7860       # then open http://127.0.0.1:7860

Tabs:
- Chat: pick a model and an adapter from runs/, upload an image, ask, keep talking (the model is loaded once
  per choice and kept); a memory of the session's earlier conversations reminds the model of what was said,
  and the panel under the chat shows what it recalled, with the scores (`vlmtune.memory.chat`);
- Runs: each run's config, its metrics with 95% CIs, its report and plots, and a filterable table of every
  test prediction (image, gold answer, both answers, whether each is right);
- Compare: two evaluations -> the comparison report (`vlmtune compare`).
The data behind each view comes from plain functions here (run_choices, metrics_rows, prediction_rows, ...),
which the tests call directly as well as through a browser.
"""

from __future__ import annotations

import base64
import json
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any

from vlmtune.errors import ConfigError, VlmtuneError

log = logging.getLogger(__name__)
NO_ADAPTER = "(none)"
EVALS = ("zero_shot", "finetuned")
OUTCOMES = ["all", "fixed (wrong -> right)", "broken (right -> wrong)", "both right", "both wrong", "any parse failure"]
MEMORY_COLUMNS = ["turn", "turns ago", "text", "score", "relevance", "recency", "frequency", "saliency"]
MEMORY_NOTE = (
    "Every question and answer is remembered for this browser session. A new question recalls the "
    "turns of earlier conversations (press *New conversation*; the current one is in the model's context "
    "already) that share a word with it: at most 3, ranked by relevance (BM25) + recency + frequency + "
    "saliency, each min-max scaled over the remembered turns and weighted (`vlmtune.memory`). They go "
    "to the model as a `<reminder>` before the question."
)
PRED_COLUMNS = [
    "image",
    "id",
    "gold",
    "zero-shot answer",
    "zero-shot correct",
    "fine-tuned answer",
    "fine-tuned correct",
]


# --- what is under runs/ ----------------------------------------------------------------------------------------


def run_choices(root: str | Path) -> list[str]:
    """Run directories under `root` (those with a config.yaml), by name."""
    root = Path(root)
    return sorted(p.parent.name for p in root.glob("*/config.yaml")) if root.is_dir() else []


def evaluation_choices(root: str | Path) -> list[str]:
    """Evaluation directories under `root` (metrics.json + predictions.jsonl), as paths relative to root."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        str(p.parent.relative_to(root)) for p in root.rglob("metrics.json") if (p.parent / "predictions.jsonl").exists()
    )


def adapter_choices(root: str | Path) -> list[str]:
    root = Path(root)
    return [NO_ADAPTER] + (
        sorted(str(p.parent) for p in root.glob("*/adapter/adapter_config.json")) if root.is_dir() else []
    )


def base_model_of(adapter: str) -> str | None:
    """The model a run's adapter was trained on (its run's config.yaml), if known."""
    import yaml

    cfg = Path(adapter).parent / "config.yaml"
    if adapter == NO_ADAPTER or not cfg.exists():
        return None
    return (yaml.safe_load(cfg.read_text()) or {}).get("model", {}).get("name")


def metrics_rows(run_dir: Path) -> list[list[Any]]:
    """[evaluation, metric, value, 95% CI, n, method] for each scalar metric of each evaluation of the run."""
    rows = []
    for name in EVALS:
        path = run_dir / name / "metrics.json"
        if not path.exists():
            continue
        for metric, e in json.loads(path.read_text())["metrics"].items():
            if not (isinstance(e, dict) and isinstance(e.get("value"), (int, float))):
                continue
            ci = e.get("ci")
            rows.append(
                [
                    name,
                    metric,
                    round(float(e["value"]), 4),
                    f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "",
                    e.get("n", ""),
                    e.get("method", "percentile bootstrap") if ci else "",
                ]
            )
    return rows


def _thumb(path: str, cache: dict[str, str]) -> str:
    from vlmtune.report.plots import thumbnail_png

    if path not in cache:
        png = thumbnail_png(path, 64) if path else None
        cache[path] = f"![]({'data:image/png;base64,' + base64.b64encode(png).decode()})" if png else ""
    return cache[path]


def prediction_rows(run_dir: Path, outcome: str = "all", text: str = "") -> list[list[Any]]:
    """Every test prediction of a run (both evaluations side by side), filtered by outcome and by text."""
    from vlmtune.report.compare import pair_rows
    from vlmtune.report.load import load_eval_dir

    have = [n for n in EVALS if (run_dir / n / "predictions.jsonl").exists()]
    if not have:
        return []
    runs = [load_eval_dir(run_dir / n, n) for n in have]
    pairs: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = (
        list(pair_rows(runs[0], runs[1])) if len(runs) == 2 else [(r, None) for r in runs[0].rows]
    )
    if len(runs) == 1 and have == ["finetuned"]:
        pairs = [(None, r) for r in runs[0].rows]
    keep = {
        "fixed (wrong -> right)": lambda a, b: a and b and not a["correct"] and b["correct"],
        "broken (right -> wrong)": lambda a, b: a and b and a["correct"] and not b["correct"],
        "both right": lambda a, b: a and b and a["correct"] and b["correct"],
        "both wrong": lambda a, b: a and b and not a["correct"] and not b["correct"],
        "any parse failure": lambda a, b: any(r is not None and r.get("parse_ok") is False for r in (a, b)),
    }.get(outcome, lambda a, b: True)
    needle = (text or "").strip().lower()
    thumbs: dict[str, str] = {}
    rows: list[list[Any]] = []
    for a, b in pairs:
        if not keep(a, b):
            continue
        first = a or b
        assert first is not None  # every pair has at least one side
        cells = [
            first["id"],
            str(first.get("target")),
            None if a is None else str(a.get("prediction")),
            None if a is None else bool(a["correct"]),
            None if b is None else str(b.get("prediction")),
            None if b is None else bool(b["correct"]),
        ]
        if needle and not any(needle in str(c).lower() for c in cells + [first.get("prompt", "")]):
            continue
        rows.append([_thumb((first.get("images") or [""])[0], thumbs), *cells])
    return rows


def run_view(root: Path, name: str) -> tuple[str, list[list[Any]], str, list[str]]:
    """A run's config (YAML), metrics rows, report (markdown) and plot files."""
    run_dir = root / name
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
    report = (run_dir / "report.md").read_text() if (run_dir / "report.md").exists() else "(no report yet)"
    # the report links its plots relatively; the app serves files under runs/ by absolute path
    report = report.replace("](plots/", f"](/gradio_api/file={(run_dir / 'plots').resolve()}/")
    report = report.replace("](predictions.html)", f"](/gradio_api/file={(run_dir / 'predictions.html').resolve()})")
    plots = sorted(str(p) for p in (run_dir / "plots").glob("*.png"))
    return config, metrics_rows(run_dir), report, plots


def compare_view(root: Path, baseline: str, candidate: str, allow_mismatch: bool) -> tuple[str, list[str]]:
    """The comparison report of two evaluations (markdown) and its plots, written to a temporary directory."""
    from vlmtune.report import compare_runs

    if not baseline or not candidate:
        raise ConfigError("pick two evaluations")
    out = Path(tempfile.mkdtemp(prefix="vlmtune-ui-compare-"))
    compare_runs(root / baseline, root / candidate, out, allow_mismatch=allow_mismatch)
    return (out / "report.md").read_text(), sorted(str(p) for p in (out / "plots").glob("*.png"))


# --- the chat model ---------------------------------------------------------------------------------------------


class Models:
    """The one model the Chat tab talks to; loaded when first asked, replaced when the choice changes."""

    def __init__(self) -> None:
        self.key: tuple[str, str] | None = None
        self.loaded: Any = None
        self.lock = threading.Lock()

    def get(self, model: str, adapter: str) -> Any:
        from vlmtune.build import resolve_model
        from vlmtune.config import ModelConfig
        from vlmtune.models.load import load_model

        with self.lock:
            if self.key != (model, adapter):
                self.loaded = None  # free the old one first
                self.loaded = load_model(
                    resolve_model(ModelConfig(name=model)), adapter=None if adapter == NO_ADAPTER else adapter
                )
                self.key = (model, adapter)
            return self.loaded


def answer(
    models: Models, conv: Any, model: str, adapter: str, question: str, image: str | None, max_new_tokens: int = 64
) -> str:
    """Ask `question` (with `image`, if any) in conversation `conv` and return the answer. `question` is the text
    the model gets (with a memory reminder in front of it, when there is one)."""
    from vlmtune.infer.chat import check_request, complete
    from vlmtune.processing import has_image_processor

    m, processor = models.get(model, adapter)
    if image:
        if not has_image_processor(processor):
            raise ConfigError(f"{model} reads text only; remove the image")
        conv.attach(image)
    req = conv.ask(question, max_new_tokens=max_new_tokens)
    check_request(m, processor, req)
    with models.lock:
        [done] = complete(m, processor, [req])
    conv.answered(req, done.text)
    return done.text


# --- the app ----------------------------------------------------------------------------------------------------


def build_app(runs: str | Path = "runs") -> Any:
    """The Gradio Blocks app over the run directory `runs`."""
    from vlmtune.extras import require

    require("ui", "vlmtune ui")
    import gradio as gr

    from vlmtune.infer.chat import Conversation
    from vlmtune.memory.chat import ChatMemory, with_reminder

    root, models = Path(runs), Models()

    def guarded(fn):
        def run(*args):
            try:
                return fn(*args)
            except VlmtuneError as e:
                raise gr.Error(str(e)) from None

        return run

    with gr.Blocks(title="vlmtune", analytics_enabled=False) as app:
        gr.Markdown("# vlmtune\nTalk to a model, read each run's results, compare two evaluations.")
        with gr.Tab("Chat"):
            with gr.Row():
                model_in = gr.Dropdown(
                    ["tiny"], value="tiny", label="model", allow_custom_value=True, elem_id="chat-model"
                )
                adapter_in = gr.Dropdown(
                    adapter_choices(root), value=NO_ADAPTER, label="adapter (from runs/)", elem_id="chat-adapter"
                )
            with gr.Row():
                with gr.Column(scale=1):
                    image_in = gr.Image(
                        type="filepath", label="image (goes with the next question)", elem_id="chat-image", height=220
                    )
                with gr.Column(scale=2):
                    chatbot = gr.Chatbot(label="conversation", elem_id="chat-log", height=320)
                    question_in = gr.Textbox(
                        label="question", placeholder="How many red shapes are there?", elem_id="chat-question"
                    )
                    with gr.Row():
                        ask_btn = gr.Button("Ask", variant="primary", elem_id="chat-ask")
                        reset_btn = gr.Button("New conversation", elem_id="chat-reset")
            # The chat's memory (vlmtune.memory.chat): what it recalled for the last question, with the scores.
            with gr.Accordion("Retrieved memories", open=True, elem_id="memory-panel"):
                gr.Markdown(MEMORY_NOTE)
                memory_out = gr.Dataframe(
                    headers=MEMORY_COLUMNS,
                    label="recalled for the last question",
                    elem_id="memory-items",
                    interactive=False,
                    wrap=True,
                )
                reminder_out = gr.Textbox(
                    label="the reminder the model was given", elem_id="memory-reminder", lines=3, interactive=False
                )
            conv_state, memory_state = gr.State(None), gr.State(None)

            def ask(model, adapter, question, image, history, conv, memory):
                conv, memory = conv or Conversation(), memory or ChatMemory()
                reminder = memory.recall(question)
                recalled = memory.rows(reminder)  # ages as of the question
                text = answer(models, conv, model, adapter, with_reminder(reminder, question), image)
                memory.remember(question, text, image)
                shown = [{"role": "user", "content": {"path": image}}] if image else []
                history = (
                    list(history or [])
                    + shown
                    + [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
                )
                return history, conv, "", None, memory, recalled, reminder.text

            def new_conversation(memory):
                if memory is not None:
                    memory.new_conversation()
                return [], None, memory

            def on_adapter(adapter):
                return gr.update(value=base_model_of(adapter) or "tiny")

            ask_in = [model_in, adapter_in, question_in, image_in, chatbot, conv_state, memory_state]
            ask_out = [chatbot, conv_state, question_in, image_in, memory_state, memory_out, reminder_out]
            ask_btn.click(guarded(ask), ask_in, ask_out)
            question_in.submit(guarded(ask), ask_in, ask_out)
            reset_btn.click(new_conversation, memory_state, [chatbot, conv_state, memory_state])
            adapter_in.change(on_adapter, adapter_in, model_in)

        with gr.Tab("Runs"):
            runs_now = run_choices(root)
            run_in = gr.Dropdown(runs_now, value=runs_now[0] if runs_now else None, label="run", elem_id="run-pick")
            metrics_out = gr.Dataframe(
                headers=["evaluation", "metric", "value", "95% CI", "n", "CI method"],
                label="metrics (test split)",
                elem_id="run-metrics",
                interactive=False,
            )
            with gr.Accordion("config.yaml", open=False):
                config_out = gr.Code(language="yaml", elem_id="run-config")
            with gr.Row():
                outcome_in = gr.Dropdown(OUTCOMES, value="all", label="show predictions", elem_id="pred-outcome")
                filter_in = gr.Textbox(label="filter (id, answer, question)", elem_id="pred-filter")
            preds_out = gr.Dataframe(
                headers=PRED_COLUMNS,
                datatype=["markdown", "str", "str", "str", "bool", "str", "bool"],
                label="every test prediction",
                elem_id="run-predictions",
                interactive=False,
                max_height=520,
                wrap=True,
                column_widths=["72px", "120px", "60px", "30%", "90px", "30%", "90px"],
            )
            plots_out = gr.Gallery(label="plots", columns=3, height=320, elem_id="run-plots")
            report_out = gr.Markdown(elem_id="run-report")

            def show_run(name, outcome, text):
                if not name:
                    return "", [], "(no runs under " + str(root) + ")", [], []
                config, metrics, report, plots = run_view(root, name)
                return config, metrics, report, plots, prediction_rows(root / name, outcome, text)

            def show_preds(name, outcome, text):
                return prediction_rows(root / name, outcome, text) if name else []

            view = [config_out, metrics_out, report_out, plots_out, preds_out]
            run_in.change(guarded(show_run), [run_in, outcome_in, filter_in], view)
            outcome_in.change(guarded(show_preds), [run_in, outcome_in, filter_in], preds_out)
            filter_in.submit(guarded(show_preds), [run_in, outcome_in, filter_in], preds_out)
            app.load(guarded(show_run), [run_in, outcome_in, filter_in], view)

        with gr.Tab("Compare"):
            evals_now = evaluation_choices(root)
            with gr.Row():
                base_in = gr.Dropdown(evals_now, label="baseline evaluation", elem_id="cmp-base")
                cand_in = gr.Dropdown(evals_now, label="candidate evaluation", elem_id="cmp-cand")
            mismatch_in = gr.Checkbox(label="allow different prompts/decoding (listed in the report)")
            cmp_btn = gr.Button("Compare", variant="primary", elem_id="cmp-go")
            cmp_plots = gr.Gallery(label="plots", columns=3, height=320)
            cmp_report = gr.Markdown(elem_id="cmp-report")
            cmp_btn.click(
                guarded(lambda b, c, m: tuple(reversed(compare_view(root, b, c, m)))),
                [base_in, cand_in, mismatch_in],
                [cmp_plots, cmp_report],
            )
    return app


def launch(runs: str | Path, *, host: str, port: int) -> None:
    """Serve the app until interrupted."""
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(runs)
    log.info(f"[ui] http://{host}:{port} (runs from {Path(runs).resolve()})")
    app.launch(
        server_name=host,
        server_port=port,
        allowed_paths=[str(Path(runs).resolve())],
        quiet=True,
        theme=_theme(),
        show_error=True,
    )


def _theme() -> Any:
    import gradio as gr

    # System fonts: the default theme fetches Google Fonts, which an offline machine cannot reach.
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])
