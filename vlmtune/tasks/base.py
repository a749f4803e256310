"""The task contract: a task turns a model's raw text into a structured answer and scores it.

A task is one file in `vlmtune/tasks/` (or in your own package: see `vlmtune.registry`):

    @TASKS.register("count", help="count objects in an image; answer is an integer")
    class CountTask(Task):
        @dataclass
        class Options:                       # the recipe's `data.task_options`, typed and documented
            max_count: int = field(default=20, metadata={"help": "..."})

        def parse(self, text, example): ...  # raw generation -> Parsed (a failure is counted, never guessed)
        def correct(self, value, example): ...
        def metrics(self, rows, *, n_boot, seed): ...
        def per_example(self, rows): ...

Generic code (evaluation, scoring, comparison, reports) calls only the methods below; every optional
hook has a default here, so it never needs to ask whether a task has one.

A prediction row (one per line of predictions.jsonl):
    {"id": str, "prediction": str (raw model text), "parsed": value or null, "parse_ok": bool,
     "target": gold value, "correct": bool, "images": [abs paths], "prompt": str (user text), "group": str}
    plus "scores": [one float per option] and "scores_from" (where they came from: "loglik" for the model's own
    log-likelihoods, or the file `vlmtune score` read, e.g. "VisDial ranks in sub.json") when the options were
    scored (eval.mode=loglik or both, or external scores), plus "memory" when the prompt holds a memory reminder
    (its method, the injected items with their score parts, the evidence's rank: `vlmtune.memory.reminder`), plus
    whatever `row_extras` adds.

A metrics dict (metrics.json["metrics"]): name -> {"value": float, "ci": [lo, hi], "n": int, "clusters": int,
"method": str, ...} plus task-specific extras under other keys (e.g. "confusion": {"labels": [...], "matrix":
[[...]]}). Intervals treat rows that share a "group" as one unit (`row_groups`); proportions get Wilson
intervals (`vlmtune.stats.proportion_entry`), other statistics a bootstrap over groups.
Parse failures are never replaced by a guess: they count as wrong and are reported.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from vlmtune.data.example import Example
from vlmtune.errors import ConfigError

if TYPE_CHECKING:  # matplotlib is imported only when a report draws
    from matplotlib.figure import Figure

Row = dict[str, Any]  # one prediction row (above)
LOGLIK = "loglik"  # a row's scores_from when the model scored the options itself
Metrics = dict[str, Any]  # one metrics dict (above)
Answerer = Callable[[list[Example]], list[str]]  # examples -> raw answers (the model, for order checks)


@dataclass(frozen=True)
class Parsed:
    value: Any  # the structured answer (int for count, label str for classify, ...); None on failure
    ok: bool  # False = parse failure (counted, reported with the raw text)
    raw: str  # the text that was parsed


# The comparison report's colours for the baseline and the candidate run, for task plots to match.
REPORT_COLORS = ("#9e9e9e", "#1f77b4")


@dataclass
class ReportSection:
    """A task's own part of a comparison report (rendered in report.md and report.html alike).

    title: the section heading. text: paragraphs (Markdown inline: **bold** and `code` are shown as such in
    HTML too). table: rows of cells, the first row the header. plot: draws on a matplotlib Figure of
    `plot_size` inches (saved as plots/<plot_name>.png; plot_name defaults to the title, made file-safe).
    """

    title: str
    text: list[str] = field(default_factory=list)
    table: list[list[str]] | None = None
    plot: Callable[[Figure], None] | None = None
    plot_name: str | None = None
    plot_size: tuple[float, float] = (6.0, 3.5)


class Task(abc.ABC):
    """Base class of every task. Subclasses set `name` (by registering) and may define `Options`."""

    name: ClassVar[str] = ""

    @dataclass
    class Options:
        """No options."""

    def __init__(self, options: Any = None, **kwargs: Any):
        if options is None:
            options = build_options(type(self), kwargs)
        elif kwargs:
            raise TypeError("give either an Options object or keyword options, not both")
        self.options = options

    # --- required ------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def parse(self, text: str, example: Example | None = None) -> Parsed:
        """Raw generation -> structured answer; Parsed(None, False, text) when no answer can be read."""

    @abc.abstractmethod
    def correct(self, value: Any, example: Example) -> bool:
        """Is a parsed answer right (exact match for closed sets)?"""

    @abc.abstractmethod
    def metrics(self, rows: Sequence[Row], *, n_boot: int = 2000, seed: int = 0) -> Metrics:
        """Prediction rows -> metrics dict (every entry with its interval, n, clusters and method; groups from
        `row_groups(rows)`)."""

    @abc.abstractmethod
    def per_example(self, rows: Sequence[Row]) -> dict[str, list[float | None]]:
        """Continuous per-example values (count: abs_error) that `compare` tests with a paired bootstrap;
        None where a value is undefined (a parse failure). Return {} when the task has none."""

    # --- optional hooks, with defaults ---------------------------------------------------------------------
    def check_example(self, example: Example) -> None:
        """Raise DataError if the example cannot be evaluated fairly (dialog: the asked round's gold answer is in
        the input). Called on EVERY example before evaluating or scoring."""
        return None  # the default: every example can be evaluated

    def row_extras(self, example: Example) -> Row:
        """Extra JSON-able fields for this example's prediction row (mcq: options, option_photo). Never
        overwrites the standard keys."""
        return {}

    def answer_texts(self, example: Example) -> list[str] | None:
        """How each of the example's options is written as an answer (mcq: "B) ..."), for log-likelihood
        scoring; None: the options as they are."""
        return None

    def default_options(self, example: Example) -> list[str] | None:
        """A closed answer set for examples without `options` (count: 0..20), so eval.mode=loglik works."""
        return None

    def option_metrics(
        self,
        rows: Sequence[Row],
        examples: Sequence[Example],
        options: Sequence[Sequence[str]],
        *,
        n_boot: int,
        seed: int,
    ) -> Metrics:
        """Metrics from option scores when answers were both generated and scored (eval.mode=both).

        Default: `loglik_accuracy`, the accuracy of the best-scoring option (no parse failures possible).
        Ranking tasks whose `metrics` already use the scores (dialog) return {}."""
        from vlmtune.stats import proportion_entry

        hits = []
        for row, ex, opts in zip(rows, examples, options):
            sc = row["scores"]
            p = self.parse(opts[max(range(len(sc)), key=sc.__getitem__)], ex)
            hits.append(bool(p.ok and self.correct(p.value, ex)))
        return {
            "loglik_accuracy": proportion_entry(hits, groups=row_groups(rows)),
            "metric_modes": {"accuracy": "generate", "loglik_accuracy": "loglik"},
        }

    def order_check(self, examples: list[Example], answer: Answerer, *, n_boot: int, seed: int) -> dict | None:
        """Ask the examples again in other option orders (mcq); None when the task has no such check or it is
        off. The result's "metrics" entries are merged into metrics.json; the whole goes to order_check.json."""
        return None

    def agreement(self, value: Any, example: Example) -> float:
        """How well a parsed answer agrees with the gold one, 0..1 (a teacher's answer is kept at or above
        `teach.filters.min_relevance`). Default: 1.0 when `correct`, else 0.0; dialog gives the dense relevance of
        the option the answer matches."""
        return 1.0 if self.correct(value, example) else 0.0

    def grounding_vocabulary(self, example: Example) -> frozenset[str] | None:
        """The closed set of words that carry facts in this example's world (the shapes world: colours, kinds,
        numbers, sizes), so a teacher's reminder can be checked exactly against the dialogue; None: an open world,
        checked by word overlap."""
        return None

    def round_of(self, example: Example) -> tuple[str, int] | None:
        """(dialogue id, round) when examples are rounds of one dialogue (so a teacher's output can be checked for
        what only later rounds say); None: examples stand alone."""
        return None

    def extras(self) -> list[tuple[str, str]]:
        """(pip extra, the option that needs it) for each optional dependency these options use (vlmtune.extras),
        so `validate` can name what is missing before anything runs."""
        return []

    def smoke_options(self) -> Any:
        """This task's options shrunk for `run --smoke` (a few records, two steps, no optional extras)."""
        return self.options

    def headline(self, metrics: Metrics) -> str:
        """The metric a one-line summary shows (its key in `metrics`)."""
        return "accuracy"

    def report_sections(
        self, baseline: Sequence[Row], candidate: Sequence[Row], *, labels: tuple[str, str] = ("baseline", "candidate")
    ) -> list[ReportSection]:
        """Sections of the comparison report that belong to this task (count: the error histogram).

        baseline, candidate: the two runs' prediction rows, paired (row i of each is the same example);
        labels: the runs' names as the report shows them."""
        return []


def row_groups(rows: Sequence[Row]) -> list[Any]:
    """Each row's group for the intervals: its "group" (written by the evaluation: the example's group, or its
    id), else its "id" (rows made elsewhere), else None (a group of its own)."""
    return [r.get("group") if r.get("group") is not None else r.get("id") for r in rows]


def build_options(cls: type[Task], values: dict[str, Any], where: str = "data.task_options") -> Any:
    """`cls.Options` from a dict, each value checked against its field's type; unknown keys are errors."""
    from vlmtune.config import coerce_fields

    return cls.Options(**coerce_fields(cls.Options, values, where))


def options_dict(task: Task) -> dict[str, Any]:
    """The task's options as plain values (recorded in metrics.json, so `compare` rebuilds the same task)."""
    opts = task.options
    return dataclasses.asdict(opts) if dataclasses.is_dataclass(opts) and not isinstance(opts, type) else {}


def build_task(name: str, options: dict[str, Any] | None = None) -> Task:
    """The registered task `name`, built with its options (a recipe's `data.task_options`)."""
    from vlmtune.registry import TASKS

    cls = TASKS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"task '{name}' is registered as {cls!r}, which is not a vlmtune.tasks.base.Task subclass")
    task = cls(build_options(cls, dict(options or {})))
    return task
