"""A task that vlmtune does not ship: "is the number of red shapes even or odd?", answered with a word.

It is a plugin, found by vlmtune only through its registry (`VLMTUNE_PLUGINS=tests.plugins.parity`, or
`TASKS.register("parity", "tests.plugins.parity:ParityTask")`); no vlmtune module names it. It has options
of its own (the two answer words, from the recipe's data.task_options) and a report section of its own.

`records(count_records, options)` turns the shapes world's counting records into parity records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from vlmtune.registry import TASKS
from vlmtune.stats import proportion_entry
from vlmtune.tasks.base import REPORT_COLORS, Parsed, ReportSection, Row, Task

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SECTION_TITLE = "Parity answers"


@TASKS.register("parity", help="is the number of red shapes even or odd? (a test plugin)")
class ParityTask(Task):
    """The answer is one of two words; the first of them in the text is the prediction."""

    name = "parity"

    @dataclass
    class Options:
        even: str = field(default="even", metadata={"help": "the answer word for an even count"})
        odd: str = field(default="odd", metadata={"help": "the answer word for an odd count"})

    @property
    def words(self) -> tuple[str, str]:
        return self.options.even, self.options.odd

    def parse(self, text: str, example: Any = None) -> Parsed:
        for word in re.findall(r"\w+", (text or "").lower()):
            if word in self.words:
                return Parsed(word, True, text)
        return Parsed(None, False, text)

    def correct(self, value: Any, example: Any) -> bool:
        return value is not None and value == example.target

    def metrics(self, rows: Sequence[Row], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
        fails = sum(not r["parse_ok"] for r in rows)
        return {
            "accuracy": proportion_entry([bool(r["correct"]) for r in rows], n_boot=n_boot, seed=seed),
            "parse_failures": fails,
            "parse_failure_rate": fails / len(rows) if rows else 0.0,
        }

    def per_example(self, rows: Sequence[Row]) -> dict[str, list[float | None]]:
        return {}

    def answer_counts(self, rows: Sequence[Row]) -> list[int]:
        """How many rows answered each word, and how many could not be read."""
        parsed = [r["parsed"] if r["parse_ok"] else None for r in rows]
        return [parsed.count(self.options.even), parsed.count(self.options.odd), parsed.count(None)]

    def report_sections(
        self, baseline: Sequence[Row], candidate: Sequence[Row], *, labels: tuple[str, str] = ("baseline", "candidate")
    ) -> list[ReportSection]:
        counts = [self.answer_counts(baseline), self.answer_counts(candidate)]
        gold = [sum(r["target"] == word for r in baseline) for word in self.words]
        header = ["run", f"answered '{self.options.even}'", f"answered '{self.options.odd}'", "unreadable"]

        def draw(fig: "Figure") -> None:
            ax = fig.subplots()
            for k, (label, row, color) in enumerate(zip(labels, counts, REPORT_COLORS)):
                ax.bar([x + (k - 0.5) * 0.4 for x in range(3)], row, 0.4, color=color, label=label)
            ax.set_xticks(range(3), [self.options.even, self.options.odd, "unreadable"])
            ax.legend(fontsize=8)

        return [
            ReportSection(
                title=SECTION_TITLE,
                text=[f"The gold answers: {gold[0]} × `{self.options.even}`, {gold[1]} × `{self.options.odd}`."],
                table=[header] + [[label, *map(str, row)] for label, row in zip(labels, counts)],
                plot=draw,
                plot_name="parity_answers",
                plot_size=(5.0, 3.0),
            )
        ]


def records(count_records: list[dict[str, Any]], options: dict[str, str]) -> list[dict[str, Any]]:
    """Counting records -> parity records (same images and groups), answered with the option words."""
    out = []
    for r in count_records:
        word = options["odd"] if int(r["target"]) % 2 else options["even"]
        question = f"Is the number of red shapes {options['even']} or {options['odd']}?"
        out.append(
            {
                "id": r["id"].replace("count", "parity"),
                "task": "parity",
                "images": r["images"],
                "messages": [
                    {"role": "user", "content": "<image>\n" + question},
                    {"role": "assistant", "content": word},
                ],
                "target": word,
                "group": r.get("group"),
            }
        )
    return out
