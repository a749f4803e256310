"""The dialog task: VisDial-style rounds never show the asked round's answer; options and metrics are per round."""

from __future__ import annotations

import copy
import random

import pytest

from vlmtune.data.example import Example, load_jsonl
from vlmtune.data.splits import check_no_leakage, split_examples
from vlmtune.data.synth import synthesize
from vlmtune.data.synth.visdial import N_OPTIONS, N_ROUNDS, dialog_items, make_dialogue
from vlmtune.errors import DataError
from vlmtune.tasks import build_task
from vlmtune.tasks.dialog import check_no_leak

N_BOOT = 50  # CIs are not under test here; keep the runs light


def _examples(d, prefix="d0"):
    """Every round of dialogue d as Examples (what synthesize would write, minus the PNG)."""
    out = []
    for r, item in enumerate(dialog_items(d), start=1):
        meta = dict(item.meta)
        out.append(
            Example(
                id=f"{prefix}-r{r}",
                task="dialog",
                messages=item.messages,
                images=["x.png"],
                target=item.target,
                options=item.options,
                group=meta.pop("group"),
                meta=meta,
            )
        )
    return out


@pytest.fixture(scope="module")
def rounds():
    return _examples(make_dialogue(random.Random(5)))


def test_synthesis_is_deterministic_and_every_example_passes_the_checks(tmp_path):
    a = load_jsonl(synthesize("dialog", 12, tmp_path / "a", seed=3))
    b = load_jsonl(synthesize("dialog", 12, tmp_path / "b", seed=3))
    assert [(x.messages, x.target, x.options, x.group) for x in a] == [
        (x.messages, x.target, x.options, x.group) for x in b
    ]
    task = build_task("dialog")
    for ex in a:
        task.check_example(ex)
        assert ex.meta["dense"] and ex.meta["round"] == ex.target["round"]
        assert ex.group.startswith("dialog-scene-")


def test_history_holds_gold_answers_of_earlier_rounds_only(rounds):
    answers = [ex.target["answer"] for ex in rounds]
    assert len(rounds) == N_ROUNDS
    for r, ex in enumerate(rounds, start=1):
        prompt = ex.prompt_messages()
        assert [m["content"] for m in prompt if m["role"] == "assistant"] == answers[: r - 1]
        assert prompt[-1]["role"] == "user" and prompt[-1]["content"].endswith(ex.meta["question"])
        assert "<image>" in prompt[0]["content"] and ex.meta["caption"] in prompt[0]["content"]
        assert ex.answer_text() == answers[r - 1]  # round r's answer only as the training target


def test_gold_is_among_distinct_options_and_options_are_per_round(rounds):
    for ex in rounds:
        t = ex.target
        assert len(ex.options) == len(set(ex.options)) == N_OPTIONS == len(t["relevance"])
        assert ex.options[t["gt_index"]] == t["answer"] and t["relevance"][t["gt_index"]] == 1.0
        assert t["relevance"].count(1.0) == 1 and set(t["relevance"]) <= {0.0, 0.5, 1.0}
    assert len({tuple(ex.options) for ex in rounds}) == len(rounds)  # never round 1's list for every round


def test_equivalent_answers_get_half_relevance():
    seen = set()
    for i in range(30):
        for rd in make_dialogue(random.Random(i)).rounds:
            half = {o for o, v in zip(rd.options, rd.relevance) if v == 0.5}
            if rd.answer == "two":
                assert {"2", "there are two"} <= half and "three" not in half
                seen.add(rd.answer)
            if rd.answer == "yes, two of them":
                assert "yes" in half and "no" not in half
                seen.add(rd.answer)
    assert seen == {"two", "yes, two of them"}


def test_groups_keep_a_dialogues_rounds_in_one_split():
    exs = [ex for i in range(10) for ex in _examples(make_dialogue(random.Random(i)), prefix=f"d{i}")]
    assert len({ex.group for ex in exs[:N_ROUNDS]}) == 1
    assert len({ex.group for ex in exs}) == 10
    splits = split_examples(exs, {"train": 0.6, "test": 0.4}, seed=0)
    check_no_leakage(splits)
    for part in splits.values():
        assert len(part) % N_ROUNDS == 0


def test_check_no_leak_catches_a_leaking_example(rounds):
    task = build_task("dialog")
    ex = rounds[3]  # round 4
    gold = ex.target["answer"]
    task.check_example(ex)
    # The gold answer as an assistant turn inside the input (followed by a nudge so it is not the target).
    leaked = copy.deepcopy(ex)
    leaked.messages[-1:-1] = [{"role": "assistant", "content": gold}, {"role": "user", "content": "Answer again."}]
    with pytest.raises(DataError, match=r"'d0-r4' \(round 4\).*assistant"):
        check_no_leak(leaked)
    # The gold answer written into the last user message, "A:"-style, as the seed's batch inference did.
    leaked = copy.deepcopy(ex)
    leaked.messages[-2]["content"] += f"\nA: {gold}"
    with pytest.raises(DataError, match=r"round 4.*gold answer"):
        task.check_example(leaked)
    # A missing history turn is also refused.
    short = copy.deepcopy(ex)
    del short.messages[1:3]
    with pytest.raises(DataError, match="expected 3"):
        check_no_leak(short)


def test_parse_strips_reminder_blocks_and_empty_is_a_failure(rounds):
    task = build_task("dialog")
    p = task.parse("<reminder>q1: two red</reminder> <reasoning>count</reasoning> Yes, two of them.", rounds[0])
    assert p.ok and p.value == "Yes, two of them."
    assert not task.parse("<reminder>only a summary</reminder>", rounds[0]).ok
    ex = rounds[0]
    assert task.correct(ex.target["answer"].upper() + ".", ex) and not task.correct("maybe", ex)


def _rows(examples, preds, scores=None):
    task = build_task("dialog")
    rows = []
    for i, (ex, text) in enumerate(zip(examples, preds)):
        p = task.parse(text, ex)
        row = {
            "id": ex.id,
            "prediction": text,
            "parsed": p.value,
            "parse_ok": p.ok,
            "target": ex.target,
            "correct": bool(p.ok and task.correct(p.value, ex)),
        }
        if scores is not None:
            row["scores"] = scores[i]
        rows.append(row)
    return rows


def test_metrics_exact_match_and_text_metrics_match_sacrebleu(rounds):
    import sacrebleu

    golds = [ex.target["answer"] for ex in rounds]
    preds = [g if i % 2 == 0 else f"<reminder>earlier turns</reminder> maybe {g}" for i, g in enumerate(golds)]
    m = build_task("dialog").metrics(_rows(rounds, preds), n_boot=N_BOOT)
    assert m["exact_match"]["value"] == 0.5 and m["exact_match"]["n"] == N_ROUNDS
    stripped = [p.split("</reminder> ")[-1] for p in preds]
    assert m["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(stripped, [golds]).score)
    assert {"rouge1", "rougeL", "cider"} <= set(m) and m["ranking_mode"] is None and "r@1" not in m
    assert m["text_references"] == "gold answer only"


def test_ranking_metrics_from_option_scores(rounds):
    golds = [ex.target["answer"] for ex in rounds]
    # A perfect scorer: relevance itself (gold 1.0 > equivalents 0.5 > the rest 0).
    perfect = [list(ex.target["relevance"]) for ex in rounds]
    m = build_task("dialog").metrics(_rows(rounds, golds, perfect), n_boot=N_BOOT)
    assert m["ranking_mode"] == "loglik"
    assert m["r@1"]["value"] == 1.0 and m["mrr"]["value"] == 1.0 and m["mean_rank"]["value"] == 1.0
    assert m["ndcg"]["value"] == pytest.approx(1.0) and m["ndcg"]["n"] == N_ROUNDS
    assert m["metric_modes"]["r@1"].startswith("option scores") and m["metric_modes"]["bleu"].startswith("answer")
    # Scores that put the gold last: rank 100 in every round, whatever order the options are stored in.
    worst = [[0.0 if j == ex.target["gt_index"] else 1.0 for j in range(N_OPTIONS)] for ex in rounds]
    m = build_task("dialog").metrics(_rows(rounds, golds, worst), n_boot=N_BOOT)
    assert m["r@10"]["value"] == 0.0 and m["mean_rank"]["value"] == N_OPTIONS
    with pytest.raises(DataError, match="no option scores"):
        rows = _rows(rounds, golds, perfect)
        del rows[2]["scores"]
        build_task("dialog").metrics(rows, n_boot=N_BOOT)
