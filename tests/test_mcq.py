"""Task "mcq" (which object does "that one" / "저거" refer to?): parser on outputs models really write,
object/photo/exact-match metrics, the option-order check, and the shapes-world generator.

A parse failure must come back as ok=False with value None: never a guess.
"""

from __future__ import annotations

from collections import Counter

import pytest

from vlmtune.data.example import IMAGE_TOKEN, Example, load_jsonl
from vlmtune.data.synth import synthesize
from vlmtune.data.synth.coref import KO_COLOR, KO_KIND, object_name, unique_properties
from vlmtune.tasks import build_task
from vlmtune.tasks.mcq import LETTERS, exact_match, mcq_metrics, parse_option, permutation_check

KO = ["A가 올린 사진 속 노트북", "A가 올린 사진 속 헤드폰", "B가 올린 사진 속 책", "B가 올린 사진 속 커피잔"]
EN = [
    "the red circle in A's photo",
    "the blue square in A's photo",
    "the red circle in B's photo",
    "the green triangle in B's photo",
]
A, B, C, D = range(4)
FAIL = None

PARSE_CASES = [
    # bare and wrapped letters
    ("B", EN, B),
    ("B)", EN, B),
    ("(b)", EN, B),
    ("b.", EN, B),
    ("**C**", EN, C),
    ("  d\n", EN, D),
    ("Ｂ", EN, B),  # full-width letter
    ("[A]", EN, A),
    # lead-ins
    ("The answer is (b)", EN, B),
    ("Answer: B", EN, B),
    ("The correct answer is C.", EN, C),
    ("I choose D.", EN, D),
    ("Final answer: option A", EN, A),
    ("C is correct.", EN, C),
    ("정답은 B", KO, B),
    ("정답: D", KO, D),
    ("정답은 B입니다.", KO, B),
    ("B가 정답입니다.", KO, B),
    ("답은 C예요", KO, C),
    # Hangul glued to a letter or digit
    ("B번", KO, B),
    ("D번입니다", KO, D),
    ("2번", KO, B),
    ("2번째", KO, B),
    ("정답은 3번입니다.", KO, C),
    ("두 번째 보기", KO, B),
    ("②", KO, B),
    ("option 3", EN, C),
    ("the second option", EN, B),
    # letter + echoed option text; echoed text alone
    ("D) B가 올린 사진 속 커피잔", KO, D),
    ("B가 올린 사진 속 커피잔", KO, D),
    ("B가 올린 사진 속 커피잔입니다.", KO, D),
    ("B가 올린 사진 속 커피잔이 정답입니다.", KO, D),
    ("B) the blue square in A's photo", EN, B),
    ("Red circle in B's photo.", EN, C),
    ("the red circle in B's photo", EN, C),
    ("D) B가 올린 사진 속 커피잔 D) B가 올린 사진 속 커피잔", KO, D),  # the same answer repeated
    # verbose answers (the seed's 8B-Instruct examples)
    (
        "마지막 A의 발화에서 '저거'는 B가 올린 사진에 포함된 커피잔에 대한 언급입니다. "
        "따라서 정답은 D) B가 올린 사진 속 커피잔입니다.",
        KO,
        D,
    ),
    ("The last line refers back to the red circle in A's photo, which B praised. So the answer is A.", EN, A),
    ("A mentions B's photo, and the green triangle in B's photo is what \"that one\" means.", EN, D),
    # a repeated option list is a failure unless a final answer follows
    (
        "A) A가 올린 사진 속 노트북\nB) A가 올린 사진 속 헤드폰\nC) B가 올린 사진 속 책\nD) B가 올린 사진 속 커피잔",
        KO,
        FAIL,
    ),
    (
        "A) A가 올린 사진 속 노트북\nB) A가 올린 사진 속 헤드폰\nC) B가 올린 사진 속 책\nD) B가 올린 사진 속 커피잔\n정답: D",
        KO,
        D,
    ),
    ("A) the red circle in A's photo B) the blue square in A's photo C) the red circle in B's photo", EN, FAIL),
    # failures: nothing, several options, conflicts, bare digits, partial texts
    ("", EN, FAIL),
    ("I'm not sure.", EN, FAIL),
    ("잘 모르겠습니다.", KO, FAIL),
    ("A or B", EN, FAIL),
    ("Not A. B.", EN, FAIL),
    ("D) A가 올린 사진 속 노트북", KO, FAIL),  # letter D, text of option A
    ("2", KO, FAIL),  # bare digit: 0- or 1-based?
    ("정답은 2", KO, FAIL),
    ("커피잔", KO, FAIL),  # no photo: not an option text
    ("2번 사진의 커피잔", KO, FAIL),  # photo number, not option number
    ("A가 올린 사진", KO, FAIL),  # speaker A, not letter A
    ("The red one in A's photo.", EN, FAIL),  # "A's" is a speaker
    ("E", EN, FAIL),
    ("Answer: B. The answer is C.", EN, FAIL),  # two stated answers disagree
]


@pytest.mark.parametrize("text,options,expected", PARSE_CASES, ids=[c[0][:40] for c in PARSE_CASES])
def test_parse_option(text, options, expected):
    got = parse_option(text, options)
    assert (got.value, got.ok) == (expected, expected is not None), (text, got)
    assert got.raw == text


def _ex(options, target=0, option_photo=(0, 0, 1, 1), id="q"):
    opts = list(options)
    prompt = "Which one?\n" + "\n".join(f"{LETTERS[j]}) {o}" for j, o in enumerate(opts))
    return Example(
        id=id,
        task="mcq",
        messages=[
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": f"{LETTERS[target]}) {opts[target]}"},
        ],
        target=target,
        options=opts,
        meta={"option_photo": list(option_photo)},
    )


def _row(task, ex, text):
    p = task.parse(text, ex)
    return {
        "id": ex.id,
        "prediction": text,
        "parsed": p.value,
        "parse_ok": p.ok,
        "target": ex.target,
        "correct": bool(p.ok and task.correct(p.value, ex)),
        **task.row_extras(ex),
    }


def test_metrics_object_photo_exact_and_confusion():
    task = build_task("mcq")
    ex = _ex(KO, target=D)  # gold: B's coffee cup (photo 1)
    answers = [
        "D) B가 올린 사진 속 커피잔",  # right, exact
        "정답은 D) B가 올린 사진 속 커피잔입니다.",  # right, not exact (verbose)
        "C",  # wrong object, right photo
        "A) A가 올린 사진 속 노트북",  # wrong photo
        "모르겠어요",
    ]  # parse failure
    rows = [_row(task, ex, a) for a in answers]
    m = task.metrics(rows, n_boot=200)
    assert m["accuracy"]["value"] == pytest.approx(2 / 5)
    assert m["photo_accuracy"]["value"] == pytest.approx(3 / 5)  # object and photo level differ
    assert m["exact_match"]["value"] == pytest.approx(1 / 5)
    assert m["parse_failure_rate"]["value"] == pytest.approx(1 / 5) and m["parse_failures"] == 1
    for name in ("accuracy", "photo_accuracy", "exact_match", "parse_failure_rate"):
        lo, hi = m[name]["ci"]
        assert lo <= m[name]["value"] <= hi and m[name]["n"] == 5, (name, m[name])
    conf = m["confusion"]
    assert conf["pred_labels"] == ["A", "B", "C", "D", "parse_failure"]
    assert conf["matrix"][D] == [1, 0, 1, 2, 1] and sum(map(sum, conf["matrix"])) == 5
    # without the row extras the two scores that need them say so instead of crashing
    bare = [{k: v for k, v in r.items() if k not in ("options", "option_photo")} for r in rows]
    m2 = mcq_metrics(bare, n_boot=50)
    assert m2["photo_accuracy"]["n"] == 0 and m2["accuracy"]["value"] == pytest.approx(2 / 5) and m2["notes"]


def test_breakdown_reports_accuracy_per_language_in_both_modes():
    task = build_task("mcq", {"breakdown": ["lang"]})
    exs = [_ex(KO, target=D, id=f"ko{i}") for i in range(3)] + [
        _ex(["x", "y", "z", "w"], id=f"en{i}") for i in range(2)
    ]
    for ex, lang in zip(exs, ["ko"] * 3 + ["en"] * 2):
        ex.meta["lang"] = lang
    answers = ["D", "D", "A", "A", "모르겠어요"]  # ko: 2 of 3 right; en: 1 of 2 (one parse failure)
    rows = [_row(task, ex, a) for ex, a in zip(exs, answers)]
    assert rows[0]["subset"] == {"lang": "ko"}
    m = task.metrics(rows, n_boot=200)
    assert m["accuracy"]["value"] == pytest.approx(3 / 5)
    assert m["accuracy[lang=ko]"]["value"] == pytest.approx(2 / 3) and m["accuracy[lang=ko]"]["n"] == 3
    assert m["accuracy[lang=en]"]["value"] == pytest.approx(1 / 2) and m["accuracy[lang=en]"]["n"] == 2
    for i, sc in enumerate([[0, 0, 0, 1], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]]):
        rows[i]["scores"] = sc  # loglik: ko 1 of 3, en 2 of 2
    opts = [task.answer_texts(ex) for ex in exs]
    o = task.option_metrics(rows, exs, opts, n_boot=200, seed=0)
    assert o["loglik_accuracy"]["value"] == pytest.approx(3 / 5)
    assert o["loglik_accuracy[lang=ko]"]["value"] == pytest.approx(1 / 3)
    assert o["loglik_accuracy[lang=en]"]["value"] == pytest.approx(1.0)
    assert o["metric_modes"]["accuracy[lang=en]"] == "generate"
    assert o["metric_modes"]["loglik_accuracy[lang=en]"] == "loglik"
    # without the option, no subset entries and no subset field
    plain = build_task("mcq")
    assert "subset" not in plain.row_extras(exs[0])
    assert not [k for k in plain.metrics(rows, n_boot=50) if "[" in k]


def test_exact_match_strips_only_a_leading_letter():
    assert exact_match("B) the blue square in A's photo.", "the blue square in A's photo")
    assert exact_match("(b) The Blue Square in A's photo", "the blue square in A's photo")
    assert not exact_match(
        "B) the blue square in A's photo B) the blue square in A's photo", "the blue square in A's photo"
    )
    assert not exact_match("B가 올린 사진 속 커피잔입니다", "B가 올린 사진 속 커피잔")


def _bank(n=40):
    opts = [
        [
            f"the {c} {k} in {w}'s photo"
            for c, k, w in (
                ("red", "circle", "A"),
                ("blue", "square", "A"),
                ("red", "circle", "B"),
                ("green", "triangle", "B"),
            )
        ]
    ]
    return [_ex(opts[0], target=i % 4, id=f"q{i}") for i in range(n)]


def test_permutation_check_always_a_is_inconsistent_and_biased():
    out = permutation_check(_bank(), lambda exs: ["A"] * len(exs), n_perm=3, n_boot=100)
    assert out["n_orderings"] == 4 and out["parse_failures"] == 0
    assert out["consistency"]["value"] < 0.2
    assert out["position_bias"]["counts"] == [160, 0, 0, 0] and out["position_bias"]["p_value"] < 1e-6


def test_permutation_check_right_text_is_consistent_and_unbiased():
    seen = []

    def oracle(exs):  # answers with the gold option's text, no letter
        seen.extend(exs)
        return [ex.options[ex.target] for ex in exs]

    out = permutation_check(_bank(), oracle, n_perm=3, n_boot=100)
    assert out["consistency"]["value"] == 1.0 and out["accuracy_by_ordering"] == [1.0] * 4
    assert out["position_bias"]["p_value"] > 0.05, out["position_bias"]
    assert all(a == [i % 4] * 4 for i, a in enumerate(out["answers"]))
    # the prompts were really rewritten: the gold letter line carries the gold text
    for ex in seen:
        assert f"{LETTERS[ex.target]}) {ex.options[ex.target]}" in ex.messages[0]["content"]
    assert (
        permutation_check(_bank(8), oracle, n_perm=3, seed=1)["answers"]
        == permutation_check(_bank(8), oracle, n_perm=3, seed=1)["answers"]
    )


@pytest.fixture(scope="module")
def mcq_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("mcq")
    return load_jsonl(synthesize("mcq", 30, d / "a")), d


def test_generator_is_deterministic(mcq_data):
    exs, d = mcq_data
    again = load_jsonl(synthesize("mcq", 30, d / "b"))
    assert [(e.messages, e.target, e.options, e.meta) for e in exs] == [
        (e.messages, e.target, e.options, e.meta) for e in again
    ]


def test_generator_referent_options_and_placeholders(mcq_data):
    exs, _ = mcq_data
    assert {e.meta["lang"] for e in exs} == {"en", "ko"}
    assert {e.meta["modality"] for e in exs} == {"image", "caption", "both"}
    assert {e.meta["referent"]["strategy"] for e in exs} == {"mention", "property"}
    for e in exs:
        lang, meta, prompt = e.meta["lang"], e.meta, e.messages[0]["content"]
        ref = meta["referent"]
        n_img = 0 if meta["modality"] == "caption" else 2
        assert prompt.count(IMAGE_TOKEN) == len(e.images) == n_img, (e.id, meta["modality"])
        assert ("저거" in prompt) == (lang == "ko") and ("that one" in prompt) == (lang == "en")
        # exactly one option is the referent: gold photo + gold object
        picks = list(zip(meta["option_photo"], meta["option_object"]))
        assert len(set(picks)) == 4 and len(set(e.options)) == 4
        assert [j for j, p in enumerate(picks) if p == (ref["photo"], ref["index"])] == [e.target]
        gold_shape = meta["scenes"][ref["photo"]]["shapes"][ref["index"]]
        assert (gold_shape["color"], gold_shape["kind"]) == (ref["color"], ref["kind"])
        # the dialogue fixes the referent: its line names it or gives a property only it has in its photo
        speaker, line = meta["turns"][ref["line"]]
        assert f'{speaker}: "{line}"' in prompt
        later = meta["turns"][ref["line"] + 1 :]
        assert 1 <= len(later) <= 2 and ("저거" if lang == "ko" else "that one") in later[-1][1]
        if ref["strategy"] == "mention":
            assert object_name(ref["color"], ref["kind"], lang) in line
        else:
            shapes = meta["scenes"][ref["photo"]]["shapes"]
            value = gold_shape[ref["property"]]
            assert [s[ref["property"]] for s in shapes].count(value) == 1, (e.id, ref)
            assert ref["property"] in _props(shapes, ref["index"])
        for _, between in later:  # nothing after the referent's line names another object
            assert not any(object_name(c, k, lang) in between for c in KO_COLOR for k in KO_KIND)
        # the referent's kind is also in the other photo, and such a distractor is an option
        other = 1 - ref["photo"]
        assert any(p == other and meta["scenes"][p]["shapes"][i]["kind"] == ref["kind"] for p, i in picks)
        assert sum(p == ref["photo"] for p in meta["option_photo"]) >= 2  # right photo, wrong object
        # the answer is the lettered gold option and parses back to the target
        assert e.answer_text() == f"{LETTERS[e.target]}) {e.options[e.target]}"
        assert parse_option(e.answer_text(), e.options).value == e.target
        assert exact_match(e.answer_text(), e.options[e.target])
    assert len(Counter(e.target for e in exs)) >= 3  # the gold letter is not stuck in one place


def _props(shapes, index):
    from vlmtune.data.synth.shapes import Scene, Shape

    scene = Scene(
        shapes=tuple(Shape(s["kind"], s["color"], s["size"], s["cell"], (0, 0)) for s in shapes),
        background=0,
        noise_seed=0,
    )
    return unique_properties(scene, index)
