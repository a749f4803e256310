"""Every on-disk reader, on tiny fixtures in the real layouts: what loads, and how each bad input fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlmtune.data.example import load_jsonl, write_jsonl
from vlmtune.data.formats.csv_labels import read_csv_labels
from vlmtune.data.formats.imagefolder import read_imagefolder
from vlmtune.data.formats.mcq_json import read_mcq_json
from vlmtune.data.formats.sharegpt import read_hf_disk, read_sharegpt
from vlmtune.data.formats.visdial import read_visdial
from vlmtune.data.synth.visdial import DIALOG_INSTRUCTION
from vlmtune.errors import ConfigError, DataError
from vlmtune.registry import FORMATS
from vlmtune.tasks.dialog import check_no_leak, check_target
from vlmtune.tasks.mcq import McqTask


def jpeg(path: Path, color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path, format="JPEG")
    return path


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def error_of(reader_fn, *args, **kw) -> DataError:
    with pytest.raises(DataError) as ei:
        list(reader_fn(*args, **kw))
    return ei.value


def test_every_reader_is_registered():
    for name in ("visdial", "imagefolder", "csv_labels", "mcq_json", "sharegpt", "hf_disk"):
        assert callable(FORMATS.get(name))


# --- VisDial ------------------------------------------------------------------------------------------

N_ROUNDS = 3


def visdial(tmp_path: Path, split: str = "val", *, unanswered_last: bool = False, n_dialogs: int = 2) -> dict:
    """A VisDial v1.0 dict: every round has its OWN 100 options (shifted per dialog and round)."""
    questions = [f"question {i}" for i in range(n_dialogs * N_ROUNDS)]  # stored without "?", as in VisDial
    answers = [f"answer {i}" for i in range(200)]
    dialogs = []
    for d in range(n_dialogs):
        rounds = []
        for r in range(N_ROUNDS):
            opts = list(range(20 * r + d, 20 * r + d + 100))
            gt = (7 * r + 3 + d) % 100
            rd = {"question": d * N_ROUNDS + r, "answer": opts[gt], "answer_options": opts, "gt_index": gt}
            if split == "test":
                rd = {"question": rd["question"], "answer": rd["answer"]}  # test history: no options
                if unanswered_last and r == N_ROUNDS - 1:
                    rd = {"question": d * N_ROUNDS + r, "answer_options": opts}
            rounds.append(rd)
        dialogs.append({"image_id": 100 + d, "caption": f"a caption {d}", "dialog": rounds})
    return {"version": "1.0", "split": split, "data": {"questions": questions, "answers": answers, "dialogs": dialogs}}


@pytest.fixture
def val_dir(tmp_path: Path) -> Path:
    for d in range(2):
        jpeg(tmp_path / "images" / f"VisualDialog_val2018_{100 + d:012d}.jpg")
    write_json(tmp_path / "visdial_1.0_val.json", visdial(tmp_path))
    rel = [0.0] * 100
    rel[10], rel[50] = 1.0, 0.5
    write_json(tmp_path / "dense.json", [{"image_id": 100, "round_id": 2, "gt_relevance": rel}])
    return tmp_path


def test_visdial_one_example_per_round_with_gold_history_own_options_and_dense_relevance(val_dir):
    data = json.loads((val_dir / "visdial_1.0_val.json").read_text())["data"]
    exs = list(
        read_visdial(val_dir / "visdial_1.0_val.json", image_dirs=[val_dir / "images"], dense=val_dir / "dense.json")
    )
    assert len(exs) == 2 * N_ROUNDS
    for ex in exs:
        d, r = ex.meta["image_id"] - 100, ex.target["round"]
        assert ex.meta["round_id"] == r and ex.task == "dialog"
        rd = data["dialogs"][d]["dialog"][r - 1]
        # exactly r-1 assistant turns in the model input, and the gold answer of round r is not among them
        assert sum(m["role"] == "assistant" for m in ex.prompt_messages()) == r - 1
        check_no_leak(ex)
        check_target(ex)
        assert ex.answer_text() == data["answers"][rd["answer"]] == ex.target["answer"]
        # this round's own options, not round 1's
        assert ex.options == [data["answers"][i] for i in rd["answer_options"]]
        assert len(ex.options) == 100 and ex.options[ex.target["gt_index"]] == ex.target["answer"]
        assert ex.target["relevance"] is None if (d, r) != (0, 2) else ex.target["relevance"][10] == 1.0
        assert ex.meta["dense"] is ((d, r) == (0, 2))
        assert Path(ex.images[0]).name == f"VisualDialog_val2018_{100 + d:012d}.jpg"
        assert ex.group == f"visdial-{100 + d}"
        first = ex.messages[0]["content"]
        assert first.startswith("<image>\n" + DIALOG_INSTRUCTION) and f"Caption: a caption {d}\n" in first
        assert first.endswith(f"question {d * N_ROUNDS}?")
        assert ex.prompt_messages()[-1]["content"].endswith(f"question {d * N_ROUNDS + r - 1}?")
    by_round = {ex.target["round"]: ex.options for ex in exs if ex.meta["image_id"] == 100}
    assert by_round[1] != by_round[2] != by_round[3]


def test_visdial_last_round_only_and_jsonl_round_trip(val_dir):
    exs = list(read_visdial(val_dir / "visdial_1.0_val.json", image_dirs=[val_dir / "images"], rounds="last"))
    assert [ex.target["round"] for ex in exs] == [N_ROUNDS, N_ROUNDS]
    for ex in exs:
        check_no_leak(ex)
    # what `vlmtune data convert` would write reads back unchanged through the canonical reader
    back = load_jsonl(write_jsonl(val_dir / "out" / "visdial.jsonl", exs))
    assert [{**e.to_dict(), "images": None} for e in back] == [{**e.to_dict(), "images": None} for e in exs]
    assert [Path(e.images[0]).resolve() for e in back] == [Path(e.images[0]) for e in exs]


def test_visdial_train_images_come_from_both_coco_sets(tmp_path):
    jpeg(tmp_path / "coco" / "train2014" / f"COCO_train2014_{100:012d}.jpg")
    jpeg(tmp_path / "coco" / "val2014" / f"COCO_val2014_{101:012d}.jpg")
    path = write_json(tmp_path / "visdial_1.0_train.json", visdial(tmp_path, "train"))
    exs = list(read_visdial(path, image_dirs=[tmp_path / "coco"], rounds="last"))  # conventional subfolders searched
    assert [Path(ex.images[0]).name for ex in exs] == [f"COCO_train2014_{100:012d}.jpg", f"COCO_val2014_{101:012d}.jpg"]
    assert exs[0].id == "visdial-train-100-3"


def test_visdial_missing_image_names_the_image_id_and_the_names_tried(tmp_path):
    path = write_json(tmp_path / "visdial_1.0_train.json", visdial(tmp_path, "train"))
    e = error_of(read_visdial, path, image_dirs=[tmp_path])
    assert "image_id 100" in str(e) and f"COCO_train2014_{100:012d}.jpg" in str(e)
    assert f"COCO_val2014_{100:012d}.jpg" in str(e) and str(tmp_path) in str(e)
    assert e.field == "data.dialogs[0].image_id"


def test_visdial_test_split_unanswered_round_only_on_request(tmp_path):
    for d in range(2):
        jpeg(tmp_path / f"VisualDialog_test2018_{100 + d:012d}.jpg")
    path = write_json(tmp_path / "visdial_1.0_test.json", visdial(tmp_path, "test", unanswered_last=True))
    reader = read_visdial(path)  # image_dirs default: the JSON's folder
    assert list(reader) == []
    assert reader.skipped == {"unanswered": 2, "history_only": 4}
    exs = list(read_visdial(path, include_unanswered=True))
    assert len(exs) == 2
    for ex in exs:
        assert ex.target == {"answer": None, "gt_index": None, "relevance": None, "round": N_ROUNDS}
        assert ex.messages[-1]["role"] == "user" and ex.answer_text() is None
        assert sum(m["role"] == "assistant" for m in ex.messages) == N_ROUNDS - 1
        assert len(ex.options) == 100
    with pytest.raises(DataError):  # nothing to score against: evaluation refuses it
        check_target(exs[0])


def test_visdial_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "v.json"
    path.write_text('{"split": "val",\n "data": {"questions": [1,}}')
    e = error_of(read_visdial, path)
    assert e.file == str(path) and e.line == 2 and "not valid JSON" in str(e)


def test_visdial_options_not_100_and_wrong_gt_index(val_dir):
    obj = visdial(val_dir)
    obj["data"]["dialogs"][1]["dialog"][1]["answer_options"] = list(range(99))
    obj["data"]["dialogs"][0]["dialog"][2]["gt_index"] += 1
    path = write_json(val_dir / "bad.json", obj)
    e = error_of(read_visdial, path, image_dirs=[val_dir / "images"])
    assert "dialog 0 (image_id 100) round 3" in str(e) and e.field == "data.dialogs[0].dialog[2].gt_index"
    reader = read_visdial(path, image_dirs=[val_dir / "images"], skip_invalid=True)
    exs = list(reader)
    assert len(exs) == 4 and reader.rejected == 2
    rows = [json.loads(x) for x in reader.rejects_path.read_text().splitlines()]
    assert reader.rejects_path == val_dir / "bad.json.rejects.jsonl"
    assert {r["record"] for r in rows} == {"dialog 0 (image_id 100) round 3", "dialog 1 (image_id 101) round 2"}
    assert any("answer_options must list 100" in r["error"] for r in rows)


def test_visdial_is_streamed_in_the_official_key_order_with_a_bom(val_dir, monkeypatch):
    """The real files put data.dialogs before answers and questions; nothing may json.load the dialog file."""
    import vlmtune.data.formats.visdial as vd

    obj = visdial(val_dir)
    data = obj["data"]
    obj["data"] = {"dialogs": data["dialogs"], "answers": data["answers"], "questions": data["questions"]}
    text = json.dumps({"data": obj["data"], "split": "val", "version": "1.0"})
    path = val_dir / "official_order.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    real_load = json.load

    def no_whole_file_load(f, *a, **kw):
        if Path(getattr(f, "name", "")).name == path.name:
            raise AssertionError("the dialog file was loaded whole")
        return real_load(f, *a, **kw)

    monkeypatch.setattr(vd.json, "load", no_whole_file_load)
    exs = list(read_visdial(path, image_dirs=[val_dir / "images"], dense=val_dir / "dense.json"))
    assert len(exs) == 2 * N_ROUNDS and exs[0].id == "visdial-val-100-1"
    assert [e.target["relevance"] is not None for e in exs].count(True) == 1  # the dense file is still read
    assert exs[-1].options == [data["answers"][i] for i in data["dialogs"][1]["dialog"][-1]["answer_options"]]


def test_visdial_broken_tail_yields_the_good_dialogs_then_names_the_line(val_dir):
    text = json.dumps(visdial(val_dir), indent=1)
    cut = text.rindex('"image_id": 101')  # the second dialog is cut off mid-record
    path = val_dir / "truncated.json"
    path.write_text(text[: cut + 20])
    reader = iter(read_visdial(path, image_dirs=[val_dir / "images"]))
    first = [next(reader) for _ in range(N_ROUNDS)]  # the first dialog streams out before the damage is reached
    assert [e.meta["image_id"] for e in first] == [100] * N_ROUNDS
    with pytest.raises(DataError) as ei:
        list(reader)
    assert ei.value.file == str(path) and ei.value.line and "not valid JSON" in str(ei.value)


@pytest.mark.parametrize(
    "damage,field",
    [
        ("no_dialogs", "data.dialogs"),
        ("dialogs_object", "data.dialogs"),
        ("number_question", "data.questions[3]"),
        ("no_data", "data"),
    ],
)
def test_visdial_bad_shape_names_the_field(val_dir, damage, field):
    obj = visdial(val_dir)
    if damage == "no_dialogs":
        del obj["data"]["dialogs"]
    elif damage == "dialogs_object":
        obj["data"]["dialogs"] = {"0": obj["data"]["dialogs"][0]}
    elif damage == "number_question":
        obj["data"]["questions"][3] = 3
    else:
        obj = {"split": "val"}
    e = error_of(read_visdial, write_json(val_dir / f"{damage}.json", obj), image_dirs=[val_dir / "images"])
    assert e.field == field, (e.field, str(e))


def test_visdial_empty_dialog_list_is_no_examples(val_dir):
    obj = visdial(val_dir)
    obj["data"]["dialogs"] = []
    assert list(read_visdial(write_json(val_dir / "empty.json", obj), image_dirs=[val_dir / "images"])) == []


def test_visdial_dense_round_beyond_the_dialog(val_dir):
    write_json(val_dir / "dense_far.json", [{"image_id": 101, "round_id": N_ROUNDS + 1, "gt_relevance": [0.0] * 100}])
    e = error_of(
        read_visdial,
        val_dir / "visdial_1.0_val.json",
        image_dirs=[val_dir / "images"],
        dense=val_dir / "dense_far.json",
    )
    assert f"image_id 101 round {N_ROUNDS + 1}" in str(e) and f"has {N_ROUNDS} round(s)" in str(e)


def test_visdial_bad_dense_file(val_dir):
    write_json(val_dir / "dense_bad.json", [{"image_id": 100, "round_id": 2, "gt_relevance": [1.0] * 10}])
    e = error_of(
        read_visdial,
        val_dir / "visdial_1.0_val.json",
        image_dirs=[val_dir / "images"],
        dense=val_dir / "dense_bad.json",
    )
    assert e.field == "[0].gt_relevance" and "10 values" in str(e)


# --- imagefolder ----------------------------------------------------------------------------------------

KO = {"0_irrelevant": "관련 없음", "1_chat_history": "마약 투약 내역 사진", "2_drug_trade": "마약 거래 대화"}


@pytest.fixture
def raw_data(tmp_path: Path) -> Path:
    root = tmp_path / "raw_data"
    jpeg(root / "0_irrelevant" / "a.jpg")
    jpeg(root / "1_chat_history" / "b.jpg")
    jpeg(root / "2_drug_trade" / "c.jpg")
    jpeg(root / "2_drug_trade" / "c_aug1.jpg")
    (root / "2_drug_trade" / "notes.txt").write_text("not an image")
    return root


def test_imagefolder_korean_mapping_options_and_groups(raw_data):
    exs = list(read_imagefolder(raw_data, labels=KO))
    assert [ex.target for ex in exs] == ["관련 없음", "마약 투약 내역 사진", "마약 거래 대화", "마약 거래 대화"]
    for ex in exs:
        assert ex.task == "classify" and ex.options == list(KO.values())
        assert (
            ex.messages[0]["content"].startswith("<image>\n")
            and "관련 없음, 마약 투약 내역 사진" in ex.messages[0]["content"]
        )
        assert ex.answer_text() == ex.target
    assert [ex.id for ex in exs][2:] == ["2_drug_trade/c", "2_drug_trade/c_aug1"]
    assert exs[2].group == exs[3].group == "c"  # an augmented copy is grouped with its source
    plain = list(read_imagefolder(raw_data, group_pattern=None))
    assert plain[3].group == "c_aug1" and plain[0].target == "irrelevant"  # "0_" prefix stripped


def test_imagefolder_mapping_must_cover_every_folder(raw_data):
    e = error_of(read_imagefolder, raw_data, labels={"0_irrelevant": "x", "1_chat_history": "y"})
    assert "2_drug_trade" in str(e) and e.field == "labels"
    e = error_of(read_imagefolder, raw_data, labels={**KO, "2_drug_trad": "z"})
    assert "did you mean '2_drug_trade'" in str(e)


def test_imagefolder_unreadable_image_named_and_skippable(raw_data):
    (raw_data / "1_chat_history" / "broken.jpg").write_bytes(b"not a jpeg")
    e = error_of(read_imagefolder, raw_data, labels=KO)
    assert "1_chat_history/broken.jpg" in str(e) and "cannot be decoded" in str(e)
    reader = read_imagefolder(raw_data, labels=KO, skip_invalid=True)
    assert len(list(reader)) == 4 and reader.rejected == 1
    assert reader.rejects_path == raw_data.parent / "raw_data.rejects.jsonl" and reader.rejects_path.exists()


# --- frames + labels.csv --------------------------------------------------------------------------------


@pytest.fixture
def mall(tmp_path: Path) -> Path:
    for i in (1, 2, 3):
        jpeg(tmp_path / "frames" / f"seq_{i:06d}.jpg")
    (tmp_path / "labels.csv").write_text("id,count\n1,35\n2,41\n3,0\n")
    return tmp_path


def test_csv_counts(mall):
    exs = list(read_csv_labels(mall / "labels.csv"))
    assert [ex.target for ex in exs] == [35, 41, 0]
    ex = exs[0]
    assert ex.task == "count" and ex.id == "seq_000001" and ex.group == "seq_000001"
    assert Path(ex.images[0]).name == "seq_000001.jpg" and ex.answer_text() == "35"
    assert ex.messages[0]["content"] == "<image>\nHow many people are in this frame?"
    assert ex.meta == {"csv_line": 2, "csv_id": "1", "file": "seq_000001.jpg"}


def test_csv_non_integer_count_names_the_line(mall):
    (mall / "labels.csv").write_text("id,count\n1,35\n2,2.5\n")
    e = error_of(read_csv_labels, mall / "labels.csv")
    assert e.line == 3 and e.field == "count" and f"{mall / 'labels.csv'}:3" in str(e) and "'2.5'" in str(e)


def test_csv_missing_image_is_an_error_or_a_reject(mall):
    (mall / "labels.csv").write_text("id,count\n1,35\n7,41\n3,0\n")
    e = error_of(read_csv_labels, mall / "labels.csv")
    assert e.line == 3 and "seq_000007.jpg" in str(e)
    reader = read_csv_labels(mall / "labels.csv", skip_invalid=True)
    assert [ex.target for ex in reader] == [35, 0] and reader.rejected == 1
    row = json.loads(reader.rejects_path.read_text())
    assert row["line"] == 3 and row["raw"] == "7,41"


def test_csv_classify_from_a_file_column_and_missing_column(mall):
    (mall / "scenes.csv").write_text("file,scene\nseq_000001.jpg,busy\nseq_000002.jpg,quiet\nseq_000003.jpg,busy\n")
    exs = list(read_csv_labels(mall / "scenes.csv", file_column="file", label_column="scene", task="classify"))
    assert [ex.target for ex in exs] == ["busy", "quiet", "busy"] and exs[0].options == ["busy", "quiet"]
    e = error_of(read_csv_labels, mall / "labels.csv", label_column="cnt")
    assert "did you mean 'count'" in str(e)


# --- mcq JSON ---------------------------------------------------------------------------------------------


def mcq_record(**over) -> dict:
    rec = {
        "id": "coref-0001",
        "turns": [
            {"speaker": "A", "text": "오늘 찍은 사진 올릴게.", "image": "photos/a.jpg"},
            {"speaker": "B", "text": "멋지다, 내 사진도 봐.", "image": "photos/b.jpg", "caption": "흰 컵과 노트북"},
            {"speaker": "A", "text": "네가 올린 사진 속 컵이 예쁘다."},
            {"speaker": "B", "text": "나도 저거 마음에 들어."},
        ],
        "question": "마지막 발화에서 '저거'가 가리키는 것은 무엇인가?",
        "options": ["A가 올린 사진 속 노트북", "B가 올린 사진 속 컵", "A가 올린 사진 속 컵", "B가 올린 사진 속 노트북"],
        "answer": "B",
        "option_photo": [0, 1, 0, 1],
    }
    rec.update(over)
    return rec


@pytest.fixture
def mcq_dir(tmp_path: Path) -> Path:
    jpeg(tmp_path / "photos" / "a.jpg")
    jpeg(tmp_path / "photos" / "b.jpg", (0, 0, 200))
    return tmp_path


def test_mcq_json_list_renders_like_the_synthetic_examples(mcq_dir):
    en = mcq_record(
        id="coref-0002",
        question="Which object does 'that one' refer to?",
        answer=2,
        option_photo=None,
        options=["the laptop in A's photo", "the cup in B's photo", "the cup in A's photo", "the book in B's photo"],
        turns=[
            {"speaker": "A", "text": "", "caption": "a cup and a laptop"},
            {"speaker": "B", "text": "I like that one."},
        ],
    )
    path = write_json(mcq_dir / "coref.json", [mcq_record(), en])
    ko, en_ex = list(read_mcq_json(path))
    assert ko.task == "mcq" and ko.target == 1 and ko.answer_text() == "B) B가 올린 사진 속 컵"
    assert [Path(p).name for p in ko.images] == ["a.jpg", "b.jpg"]
    prompt = ko.messages[0]["content"]
    assert "(사진 1: <image>)" in prompt and "(사진 2: <image> 흰 컵과 노트북)" in prompt
    assert (
        'A: "오늘 찍은 사진 올릴게."' in prompt
        and "\n질문: 마지막 발화" in prompt
        and "\nB) B가 올린 사진 속 컵\n" in prompt
    )
    assert ko.meta["option_photo"] == [0, 1, 0, 1] and ko.meta["lang"] == "ko" and ko.meta["modality"] == "mixed"
    assert McqTask().parse(ko.answer_text(), ko).value == ko.target  # the task reads its own rendering
    assert en_ex.target == 2 and en_ex.images == [] and "(Photo 1: a cup and a laptop)" in en_ex.messages[0]["content"]
    assert "Question: Which object" in en_ex.messages[0]["content"] and en_ex.meta["modality"] == "caption"


@pytest.mark.parametrize("answer", [4, -1, "E", True])
def test_mcq_out_of_range_answer(mcq_dir, answer):
    path = write_json(mcq_dir / "c.json", [mcq_record(answer=answer)])
    e = error_of(read_mcq_json, path)
    assert e.field == "answer" and "record 0 (id coref-0001)" in str(e)


def test_mcq_bad_options_missing_image_and_malformed_list(mcq_dir):
    e = error_of(read_mcq_json, write_json(mcq_dir / "c.json", [mcq_record(options=["x", "y", "z"])]))
    assert e.field == "options" and "got 3 items" in str(e)
    bad = mcq_record()
    bad["turns"][0]["image"] = "photos/missing.jpg"
    e = error_of(read_mcq_json, write_json(mcq_dir / "c.json", [bad]))
    assert e.field == "turns[0].image" and "missing.jpg" in str(e)
    (mcq_dir / "broken.json").write_text('[{"id": 1,\n "turns": ]')
    e = error_of(read_mcq_json, mcq_dir / "broken.json")
    assert e.line == 2 and "not valid JSON" in str(e)


def test_json_lists_are_streamed_and_a_broken_tail_names_its_line(mcq_dir, monkeypatch):
    """A JSON-list file (mcq_json, sharegpt) is read one record at a time: no json.load of it, and records
    before a syntax error come out before the error (which still names the line)."""
    records = [mcq_record(id=f"c{i}") for i in range(3)]
    path = mcq_dir / "list.json"
    text = json.dumps(records, ensure_ascii=False, indent=1)
    path.write_text(text, encoding="utf-8")
    real_load = json.load

    def no_whole_file_load(f, *a, **kw):
        if Path(getattr(f, "name", "")).name == path.name:
            raise AssertionError("the JSON list was loaded whole")
        return real_load(f, *a, **kw)

    monkeypatch.setattr(json, "load", no_whole_file_load)
    assert [e.id for e in read_mcq_json(path)] == ["c0", "c1", "c2"]
    monkeypatch.setattr(json, "load", real_load)
    path.write_text(text[: text.index('"c2"') + 10], encoding="utf-8")  # the third record is cut off
    reader = iter(read_mcq_json(path))
    assert [next(reader).id, next(reader).id] == ["c0", "c1"]
    with pytest.raises(DataError) as ei:
        next(reader)
    assert ei.value.line == text[: text.index('"c2"') + 10].count("\n") + 1 and "not valid JSON" in str(ei.value)


def test_mcq_jsonl_skip_invalid_counts_rejects(mcq_dir):
    path = mcq_dir / "c.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(mcq_record(), ensure_ascii=False),
                "{not json",
                json.dumps(mcq_record(id="x2", answer=9), ensure_ascii=False),
                json.dumps(mcq_record(id="x3"), ensure_ascii=False),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    e = error_of(read_mcq_json, path)
    assert e.line == 2
    reader = read_mcq_json(path, skip_invalid=True)
    assert [ex.id for ex in reader] == ["coref-0001", "x3"] and reader.rejected == 2
    assert [json.loads(x)["line"] for x in reader.rejects_path.read_text().splitlines()] == [2, 3]


# --- sharegpt / OpenAI messages --------------------------------------------------------------------------


@pytest.fixture
def lf_dir(tmp_path: Path) -> Path:
    jpeg(tmp_path / "images" / "f1.jpg")
    jpeg(tmp_path / "images" / "f2.jpg")
    write_json(
        tmp_path / "mall_sharegpt.json",
        [
            {
                "conversations": [
                    {"from": "human", "value": "<image>How many people are there?"},
                    {"from": "gpt", "value": "There are 12 people."},
                ],
                "images": ["images/f1.jpg"],
                "label": "12",
            },
            {
                "conversations": [
                    {"from": "human", "value": "How many people are there?"},  # no placeholder
                    {"from": "gpt", "value": "7"},
                ],
                "images": ["images/f2.jpg"],
                "label": "7",
            },
        ],
    )
    (tmp_path / "mall_openai.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "messages": [
                        {"role": "system", "content": "You count people."},
                        {"role": "user", "content": "How many?"},
                        {"role": "assistant", "content": "3"},
                    ],
                    "images": ["images/f1.jpg", "images/f2.jpg"],
                },
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "image_url", "image_url": {"url": "images/f2.jpg"}},
                                {"type": "text", "text": "How many?"},
                            ],
                        },
                        {"role": "assistant", "content": "five"},
                    ]
                },
            ]
        )
        + "\n"
    )
    write_json(
        tmp_path / "dataset_info.json",
        {
            "mall": {
                "file_name": "mall_sharegpt.json",
                "formatting": "sharegpt",
                "columns": {"messages": "conversations", "images": "images"},
                "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
            },
            "mall_openai": {
                "file_name": "mall_openai.jsonl",
                "formatting": "sharegpt",
                "columns": {"messages": "messages", "images": "images"},
                "tags": {
                    "role_tag": "role",
                    "content_tag": "content",
                    "user_tag": "user",
                    "assistant_tag": "assistant",
                    "system_tag": "system",
                },
            },
        },
    )
    return tmp_path


def test_sharegpt_with_and_without_placeholders(lf_dir):
    a, b = list(read_sharegpt(lf_dir / "dataset_info.json", dataset="mall", task="count"))
    assert a.target == 12 and a.messages[0]["content"] == "<image>How many people are there?"
    assert a.id == "mall-000000" and a.group == a.id and Path(a.images[0]).name == "f1.jpg"
    # no placeholder: the image goes in front of the first user message, as LLaMA-Factory does
    assert b.target == 7 and b.messages[0]["content"] == "<image>\nHow many people are there?"
    assert [ex.target for ex in read_sharegpt(lf_dir, dataset="mall", task="count", target_from="answer")] == [
        "There are 12 people.",
        "7",
    ]
    assert [ex.target for ex in read_sharegpt(lf_dir, dataset="mall", task="count", target_from="column:label")] == [
        "12",
        "7",
    ]


def test_openai_messages_system_and_content_parts(lf_dir):
    a, b = list(read_sharegpt(lf_dir / "dataset_info.json", dataset="mall_openai", task="count"))
    assert [m["role"] for m in a.messages] == ["system", "user", "assistant"]
    assert a.messages[1]["content"] == "<image><image>\nHow many?" and len(a.images) == 2 and a.target == 3
    assert b.messages[0]["content"] == "<image>\nHow many?" and Path(b.images[0]).name == "f2.jpg" and b.target == 5
    # the same file without dataset_info.json: formatting="openai" has these tags by default
    assert [ex.target for ex in read_sharegpt(lf_dir / "mall_openai.jsonl", formatting="openai", task="count")] == [
        3,
        5,
    ]


def test_sharegpt_bad_records(lf_dir):
    write_json(
        lf_dir / "bad.json",
        [
            {
                "conversations": [{"from": "human", "value": "<image><image>How many?"}, {"from": "gpt", "value": "2"}],
                "images": ["images/f1.jpg"],
            },
            {
                "conversations": [{"from": "human", "value": "<image>How many?"}, {"from": "gpt", "value": "lots"}],
                "images": ["images/f1.jpg"],
            },
            {
                "conversations": [{"from": "human", "value": "<image>How many?"}, {"from": "gpt", "value": "1"}],
                "images": ["images/nope.jpg"],
            },
            {
                "conversations": [{"from": "human", "value": "<image>How many?"}, {"from": "gpt", "value": "4"}],
                "images": ["images/f2.jpg"],
            },
        ],
    )
    e = error_of(read_sharegpt, lf_dir / "bad.json", task="count")
    assert "record 0" in str(e) and "2 <image> placeholder(s) but 1 image(s)" in str(e)
    reader = read_sharegpt(lf_dir / "bad.json", task="count", skip_invalid=True)
    assert [ex.target for ex in reader] == [4] and reader.rejected == 3
    errors = [json.loads(x)["error"] for x in reader.rejects_path.read_text().splitlines()]
    assert "cannot be read as a 'count' target" in errors[1] and "nope.jpg" in errors[2]
    with pytest.raises(ConfigError, match="Did you mean 'mall'"):
        read_sharegpt(lf_dir, dataset="mal", task="count")


def test_hf_datasets_on_disk_with_paths_and_embedded_bytes(lf_dir):
    datasets = pytest.importorskip("datasets")
    img = str(jpeg(lf_dir / "tmp_img" / "g.jpg", (10, 200, 10)))
    rows = {
        "messages": [
            [{"role": "user", "content": "How many?"}, {"role": "assistant", "content": "4"}],
            [{"role": "user", "content": "<image>How many?"}, {"role": "assistant", "content": "6"}],
        ],
        "images": [[str(lf_dir / "images" / "f1.jpg")], [img]],
    }
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(lf_dir / "ds_paths"))
    exs = list(read_hf_disk(lf_dir / "ds_paths", task="count", formatting="openai"))
    assert [ex.target for ex in exs] == [4, 6] and exs[0].messages[0]["content"] == "<image>\nHow many?"
    assert exs[0].id == "ds_paths-train-000000"
    # an Image feature embeds the bytes (the stored path is the bare file name); they are extracted once
    ds = datasets.Dataset.from_dict(rows).cast_column("images", datasets.List(datasets.Image()))
    ds.save_to_disk(str(lf_dir / "ds_bytes"))
    Path(img).unlink()
    e = error_of(read_hf_disk, lf_dir / "ds_bytes", task="count", formatting="openai")
    assert "extract_images_to" in str(e) and "row 0" in str(e) and e.field == "images[0]"
    exs = list(
        read_hf_disk(lf_dir / "ds_bytes", task="count", formatting="openai", extract_images_to=lf_dir / "extracted")
    )
    assert [ex.target for ex in exs] == [4, 6]
    assert all(Path(ex.images[0]).parent == (lf_dir / "extracted").resolve() for ex in exs)
