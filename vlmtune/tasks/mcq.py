"""Task "mcq": pick one of lettered options A) .. D) (coreference: which object does "that one" / "저거" mean?).

The target is the gold option's index (int, 0-based); the example's `options` are the option texts.

Parsing rule (what models really write; a failure is counted, never a guess):
  1. Markers are found anywhere in the answer:
     - option text: an option's text written out (normalized: case, punctuation, spacing; a leading
       English "the" may be left out; Hangul particles may be glued after it: "... 커피잔입니다").
       Letters and digits inside an echoed option text ("A가 올린 사진", "A's photo") are not markers.
     - letter A-D: alone ("B", "(b)", "b.", "**B**"), closed ("B)", "B.", "[B]"), at the end of a
       clause ("I choose B."), after "option"/"choice"/"보기"/"선택지", or glued to Korean that makes it
       an answer ("B번", "B입니다", "B예요"). A letter glued to any other Hangul is a speaker, not a
       marker ("A가 올린", "B의 사진"), as is "A's" and "A:" (a quoted dialogue line). Hedges between
       letters ("A or B", "B/C", "C 또는 D") name both.
     - digit 1-4 with an explicit option marker: "2번", "2번째" (not "2번 사진"/"2번째 발화"),
       "option 2", "choice #2", "No. 2", "②"; Korean/English ordinals "두 번째", "second option".
       A BARE digit ("2", "2.", "정답은 2") is a parse failure: the options are lettered, and a lone
       number may be 0- or 1-based, or not an option at all (a count).
  2. Answer statements win: "answer is / Answer: / I choose / 정답은 / 정답: / 답은" followed directly by
     a marker, or a marker followed by "이/가 정답" / "is correct". If there are any, they must all name
     the same option (a letter immediately followed by the text of another option is a conflict).
     This finds the final answer after a repeated option list or a long explanation.
  3. Otherwise every marker must name the same option ("D) B가 올린 사진 속 커피잔": letter and text
     agree). None, or several different options (a whole option list echoed, "A or B", a letter with
     another option's text) -> parse failure.
Negation is not understood: "not B." parses as B, and "Not A. B." names two options and fails.

Metrics (see `mcq_metrics`): accuracy (object level), photo_accuracy (the predicted option is in the
gold option's photo), exact_match (the raw text, minus a leading letter marker, equals the gold option
text after normalization: "B) ...입니다" or a repeated answer is not exact), parse_failure_rate,
each a proportion with a Wilson interval (design-effect adjusted when questions share a dialogue's group);
plus a confusion matrix over letters. `permutation_check` measures how an
answerer depends on option order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vlmtune.errors import DataError
from vlmtune.registry import TASKS
from vlmtune.stats import proportion_entry
from vlmtune.tasks.base import Answerer, Parsed, Row, Task, row_groups
from vlmtune.tasks.mcq_parse import LETTERS, PARSE_FAILURE, SCORE_NAMES, exact_match, parse_option


def mcq_metrics(
    rows: Sequence[dict[str, Any]], n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> dict[str, Any]:
    """Metrics dict for lettered multiple choice from prediction rows.

    Rows need id/prediction/parsed/parse_ok/target, plus `options` and `option_photo` (from
    `McqTask.row_extras`) for exact_match and photo_accuracy; without them those two are NaN with n=0
    and a note says why. Every score is a proportion: a Wilson interval over the rows' groups
    (`vlmtune.stats.proportion_entry`); n_boot and seed keep the common signature and change nothing here.
    Keys: accuracy, photo_accuracy, exact_match, parse_failure_rate ({"value", "ci", "n", "clusters",
    "method"}), parse_failures (int), confusion {"labels", "pred_labels", "rows", "columns", "matrix"}, notes.
    """
    n = len(rows)
    pred = [int(r["parsed"]) if r.get("parse_ok") and r.get("parsed") is not None else None for r in rows]
    gold = [int(r["target"]) for r in rows]
    ok = np.array([p is not None for p in pred], dtype=bool)
    acc = np.array([p == g for p, g in zip(pred, gold)], dtype=float)
    notes = []
    have_photo = n > 0 and all(r.get("option_photo") for r in rows)
    have_text = n > 0 and all(r.get("options") for r in rows)
    if not have_photo:
        notes.append("photo_accuracy needs 'option_photo' in every row (McqTask.row_extras)")
    if not have_text:
        notes.append("exact_match needs 'options' in every row (McqTask.row_extras)")
    photo = np.array(
        [p is not None and r["option_photo"][p] == r["option_photo"][g] for p, g, r in zip(pred, gold, rows)]
        if have_photo
        else [],
        dtype=float,
    )
    exact = np.array(
        [exact_match(r.get("prediction", ""), r["options"][g]) for g, r in zip(gold, rows)] if have_text else [],
        dtype=float,
    )
    fail = (~ok).astype(float)

    k = len(LETTERS)
    matrix = np.zeros((k, k + 1), dtype=int)  # rows = gold letter, columns = predicted letter + failure
    for p, g in zip(pred, gold):
        matrix[g, k if p is None else p] += 1
    columns = {"accuracy": acc, "photo_accuracy": photo, "exact_match": exact, "parse_failure_rate": fail}
    groups = row_groups(rows)
    # a score without its row extras has no values (size 0): a NaN entry with n = 0
    out: dict[str, Any] = {
        name: proportion_entry(columns[name], groups=groups if columns[name].size == n else None, alpha=alpha)
        for name in SCORE_NAMES
    }
    out.update(
        parse_failures=int((~ok).sum()),
        confusion={
            "labels": list(LETTERS),
            "pred_labels": list(LETTERS) + [PARSE_FAILURE],
            "rows": "gold",
            "columns": "predicted",
            "matrix": matrix.tolist(),
        },
        notes=notes,
    )
    return out


@TASKS.register("mcq", help="pick one of the lettered options A-D; object, photo and exact-match accuracy")
class McqTask(Task):
    """Multiple choice: target is the gold option index (0-based); options are the option texts."""

    name = "mcq"

    @dataclass
    class Options:
        permutations: int = field(
            default=0,
            metadata={
                "help": "also ask each question with its options shuffled this many times and report order "
                "consistency and position bias (0: off)",
                "ge": 0,
                "le": 100,
            },
        )
        breakdown: list | None = field(
            default=None,
            metadata={
                "help": "example meta fields to report accuracy for separately, e.g. [lang, modality]: one entry "
                "'accuracy[lang=en]' (and 'loglik_accuracy[lang=en]') per value found"
            },
        )

    def parse(self, text: str, example: Any = None) -> Parsed:
        return parse_option(text, getattr(example, "options", None))

    def correct(self, value: Any, example: Any) -> bool:
        return value is not None and int(value) == int(example.target)

    def check_example(self, example: Any) -> None:
        """At least two options, and the target an index into them."""
        opts, t = example.options, example.target
        if not isinstance(opts, list) or len(opts) < 2:
            raise DataError(
                f"example '{example.id}': a multiple-choice example needs at least 2 options, got {opts!r}",
                field="options",
                fix="list the answer options in 'options'",
            )
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < len(opts):
            raise DataError(
                f"example '{example.id}': target {t!r} is not an index into its {len(opts)} options",
                field="target",
                fix=f"give the gold option's 0-based index (0..{len(opts) - 1})",
            )

    def order_check(self, examples: list[Any], answer: Answerer, *, n_boot: int, seed: int) -> dict | None:
        """The option-permutation check (`permutation_check`) when options.permutations > 0."""
        if self.options.permutations <= 0:
            return None
        out = permutation_check(examples, answer, n_perm=self.options.permutations, n_boot=n_boot)
        bias = out["position_bias"]
        out["metrics"] = {
            "order_consistency": out["consistency"],
            "position_bias": {k: bias[k] for k in ("letters", "proportions", "chi2", "p_value")},
            "accuracy_by_ordering": out["accuracy_by_ordering"],
        }
        return out

    def per_example(self, rows: Sequence[Row]) -> dict[str, list[float | None]]:
        return {}

    def smoke_options(self) -> Any:
        return replace(self.options, permutations=min(self.options.permutations, 1))

    def answer_texts(self, example: Any) -> list[str]:
        """How each option is written as an answer ("B) ..."): the strings log-likelihood scoring compares."""
        return [f"{LETTERS[i]}) {o}" for i, o in enumerate(example.options)]

    def row_extras(self, example: Any) -> dict[str, Any]:
        """Fields the metrics need beyond the standard row: the option texts and each option's photo."""
        meta = getattr(example, "meta", None) or {}
        extras = {"options": list(getattr(example, "options", None) or []), "option_photo": meta.get("option_photo")}
        if self.options.breakdown:
            extras["subset"] = {key: meta.get(key) for key in self.options.breakdown}
        return extras

    def _subsets(self, rows: Sequence[Row]) -> list[tuple[str, list[int]]]:
        """(suffix "[lang=en]", row indices) for every value of every `breakdown` field, in first-seen order."""
        out: dict[str, list[int]] = {}
        for key in self.options.breakdown or []:
            for i, row in enumerate(rows):
                value = (row.get("subset") or {}).get(key)
                if value is not None:
                    out.setdefault(f"[{key}={value}]", []).append(i)
        return list(out.items())

    def metrics(self, rows: Sequence[Row], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
        """Metrics dict from prediction rows (see `mcq_metrics`), plus the accuracy of each `breakdown` subset."""
        out = mcq_metrics(rows, n_boot=n_boot, seed=seed)
        for suffix, idx in self._subsets(rows):
            out[f"accuracy{suffix}"] = proportion_entry(
                [bool(rows[i]["correct"]) for i in idx],
                n_boot=n_boot,
                seed=seed,
                groups=row_groups([rows[i] for i in idx]),
            )
        return out

    def option_metrics(
        self, rows: Sequence[Row], examples: Sequence[Any], options: Sequence[Sequence[str]], *, n_boot: int, seed: int
    ) -> dict[str, Any]:
        """Log-likelihood accuracy (the default), plus that of each `breakdown` subset."""
        out = super().option_metrics(rows, examples, options, n_boot=n_boot, seed=seed)
        for suffix, idx in self._subsets(rows):
            sub = super().option_metrics(
                [rows[i] for i in idx], [examples[i] for i in idx], [options[i] for i in idx], n_boot=n_boot, seed=seed
            )
            out[f"loglik_accuracy{suffix}"] = sub["loglik_accuracy"]
            out["metric_modes"].update({f"accuracy{suffix}": "generate", f"loglik_accuracy{suffix}": "loglik"})
        return out


# --- option-order robustness -----------------------------------------------------------------------


def permute_example(ex: Any, perm: Sequence[int], suffix: str = "") -> Any:
    """A copy of `ex` whose option j is the original option perm[j]: options, target, the lettered option
    lines of the last user message ("A) text"), the answer, and meta option_photo/option_object."""
    options = list(ex.options or [])
    if sorted(perm) != list(range(len(options))):
        raise ValueError(f"perm {list(perm)} is not a permutation of {len(options)} options")
    new_options = [options[j] for j in perm]
    new_target = list(perm).index(int(ex.target))
    messages = [dict(m) for m in ex.messages]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    content = messages[last_user]["content"]
    for j, opt in enumerate(options):
        pat = re.compile(rf"^{LETTERS[j]}\) {re.escape(str(opt))}[ \t]*$", re.M)
        if len(pat.findall(content)) != 1:
            raise DataError(
                f"example {ex.id}: the prompt has no single option line '{LETTERS[j]}) {opt}'",
                field="messages",
                fix="write each option on its own line as 'A) text'",
            )
        content = pat.sub(f"\0{j}\0", content)  # placeholders first, so a new line is never rewritten
    for j, opt in enumerate(new_options):
        content = content.replace(f"\0{perm[j]}\0", f"{LETTERS[j]}) {opt}")
    messages[last_user]["content"] = content
    if messages[-1]["role"] == "assistant":
        messages[-1]["content"] = f"{LETTERS[new_target]}) {new_options[new_target]}"
    meta = dict(ex.meta or {})
    for key in ("option_photo", "option_object"):
        if isinstance(meta.get(key), list) and len(meta[key]) == len(options):
            meta[key] = [meta[key][j] for j in perm]
    return replace(ex, id=f"{ex.id}{suffix}", messages=messages, options=new_options, target=new_target, meta=meta)


def _orderings(key: str, k: int, n_perm: int) -> list[list[int]]:
    """The original order and up to n_perm distinct shuffles, seeded by `key`."""
    rng = random.Random(key)
    out = [list(range(k))]
    for _ in range(200 * max(1, n_perm)):
        if len(out) > n_perm:
            break
        perm = list(range(k))
        rng.shuffle(perm)
        if perm not in out:
            out.append(perm)
    return out


def permutation_check(
    examples: Sequence[Any],
    predict_fn: Callable[[list[Any]], list[str]],
    n_perm: int = 3,
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """How much an answerer depends on option order. Needs no model: `predict_fn` maps a list of examples
    to their raw answers (e.g. a wrapper around `vlmtune.infer.generate.generate`).

    Every example is asked in its original order and in `n_perm` distinct shuffles (seeded by `seed` and
    the example id, so reruns ask the same questions); answers are parsed with `parse_option` and mapped
    back to the original options. `n_boot` keeps the common signature: consistency is a proportion with a
    score interval, which draws no resamples.
    Returns:
      consistency: {"value", "ci", "n", "clusters", "method"}: fraction of examples answered with the same
        original option in every ordering (a parse failure in any ordering counts as inconsistent); Wilson,
        over the examples' groups.
      accuracy_by_ordering: accuracy in ordering 0 (original), 1, ...; parse_failures (int).
      position_bias: {"letters", "counts", "proportions", "expected", "gold_counts", "chi2", "p_value"}:
        letters chosen over all parsed answers vs uniform 1/k (scipy chi-square goodness of fit;
        p small = a position preference). gold_counts shows where the gold option sat.
      answers: per example, the original option index chosen in each ordering (None = failure).
    """
    from scipy.stats import chisquare

    examples = list(examples)
    if not examples:
        raise ValueError("permutation_check needs at least one example")
    sizes = {len(ex.options or []) for ex in examples}
    if len(sizes) != 1 or not 2 <= next(iter(sizes)) <= len(LETTERS):
        raise DataError(
            f"permutation_check needs the same number (2-{len(LETTERS)}) of options in every "
            f"example, got {sorted(sizes)}",
            field="options",
        )
    k = sizes.pop()
    orders = [_orderings(f"{seed}-{ex.id}", k, n_perm) for ex in examples]
    n_orders = min(len(o) for o in orders)  # fewer than asked only when k! is small
    answers: list[list[int | None]] = [[] for _ in examples]
    letter_counts = np.zeros(k, dtype=int)
    gold_counts = np.zeros(k, dtype=int)
    acc_by_order, failures = [], 0
    for r in range(n_orders):
        batch = [permute_example(ex, o[r], suffix=f"#perm{r}") for ex, o in zip(examples, orders)]
        texts = list(predict_fn(batch))
        if len(texts) != len(batch):
            raise ValueError(f"predict_fn returned {len(texts)} answers for {len(batch)} examples")
        hits = 0
        for i, (pex, txt) in enumerate(zip(batch, texts)):
            parsed = parse_option(txt, pex.options)
            gold_counts[pex.target] += 1
            if not parsed.ok:
                failures += 1
                answers[i].append(None)
                continue
            letter_counts[parsed.value] += 1
            hits += parsed.value == pex.target
            answers[i].append(orders[i][r][parsed.value])
        acc_by_order.append(hits / len(batch))
    same = np.array([a[0] is not None and all(x == a[0] for x in a) for a in answers], dtype=float)
    total = int(letter_counts.sum())
    if total:
        chi2, p = chisquare(letter_counts)
        chi2, p = float(chi2), float(p)
    else:
        chi2 = p = float("nan")
    return {
        "n": len(examples),
        "n_orderings": n_orders,
        "consistency": proportion_entry(same, groups=[ex.group or ex.id for ex in examples]),
        "accuracy_by_ordering": acc_by_order,
        "parse_failures": failures,
        "position_bias": {
            "letters": list(LETTERS[:k]),
            "counts": letter_counts.tolist(),
            "proportions": (letter_counts / total).tolist() if total else [float("nan")] * k,
            "expected": [1 / k] * k,
            "gold_counts": gold_counts.tolist(),
            "chi2": chi2,
            "p_value": p,
        },
        "answers": answers,
    }
