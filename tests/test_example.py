"""The canonical Example record: what loads, and that every bad record fails with file, line, field and fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from vlmtune.data.example import Example, example_from_dict, iter_jsonl, load_jsonl, write_jsonl
from vlmtune.errors import DataError

TASKS = ["count", "classify", "mcq"]


def make_png(path: Path, color: tuple[int, int, int] = (255, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), color).save(path)
    return path


def record(**over) -> dict:
    rec = {
        "id": "count-000001",
        "task": "count",
        "images": ["images/000001.png"],
        "messages": [
            {"role": "user", "content": "<image>\nHow many red shapes are there?"},
            {"role": "assistant", "content": "3"},
        ],
        "target": 3,
        "options": None,
        "group": "scene-000001",
        "meta": {},
    }
    rec.update(over)
    return rec


def write_lines(path: Path, lines: list[str | dict]) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines), encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    make_png(tmp_path / "images" / "000001.png")
    make_png(tmp_path / "images" / "000002.png", (0, 0, 255))
    return tmp_path


def load_error(path: Path, **kw) -> DataError:
    with pytest.raises(DataError) as ei:
        load_jsonl(path, **kw)
    return ei.value


# --- good records -------------------------------------------------------------------------------------


def test_good_record_loads_with_absolute_image_paths(data_dir):
    p = write_lines(data_dir / "d.jsonl", [record()])
    (ex,) = load_jsonl(p)
    assert ex.id == "count-000001" and ex.task == "count" and ex.target == 3
    assert ex.group == "scene-000001"
    assert ex.images == [str(data_dir / "images" / "000001.png")]
    assert Path(ex.images[0]).is_absolute()


def test_blank_lines_are_ignored_and_int_ids_become_strings(data_dir):
    p = write_lines(data_dir / "d.jsonl", ["", record(id=7), "   "])
    (ex,) = load_jsonl(p)
    assert ex.id == "7"


def test_round_trip_write_then_load_keeps_relative_image_paths(data_dir):
    src = write_lines(
        data_dir / "d.jsonl",
        [
            record(),
            record(
                id="two",
                images=["images/000001.png", "images/000002.png"],
                group=None,
                messages=[
                    {"role": "system", "content": "Count carefully."},
                    {"role": "user", "content": "<image> then <image>: how many in total?"},
                    {"role": "assistant", "content": "5"},
                ],
                target=5,
                meta={"source": "synth"},
            ),
        ],
    )
    before = load_jsonl(src)
    out = data_dir / "out" / "copy.jsonl"
    write_jsonl(out, before)
    # On disk the paths are relative to the new file, so the dataset directory can be moved.
    rows = [json.loads(ln) for ln in out.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["images"] == [str(Path("..") / "images" / "000001.png")]
    assert rows[1]["images"] == [str(Path("..") / "images" / "000001.png"), str(Path("..") / "images" / "000002.png")]
    after = load_jsonl(out)
    # Absolute paths are resolved from a different directory, so compare resolved paths, rest as-is.
    for a, b in zip(before, after):
        assert [Path(p).resolve() for p in a.images] == [Path(p).resolve() for p in b.images]
        da, db = a.to_dict(), b.to_dict()
        da.pop("images"), db.pop("images")
        assert da == db
    assert len(after) == 2


def test_prompt_messages_excludes_the_final_answer():
    ex = Example(
        id="a",
        task="count",
        messages=[
            {"role": "system", "content": "s"},
            {"role": "user", "content": "<image>\nHow many?"},
            {"role": "assistant", "content": "2"},
            {"role": "user", "content": "And blue ones?"},
            {"role": "assistant", "content": "1"},
        ],
        images=["x.png"],
    )
    prompt = ex.prompt_messages()
    assert prompt == ex.messages[:4]
    assert prompt[-1]["role"] == "user"
    assert all(m["content"] != "1" for m in prompt if m["role"] == "assistant")
    assert ex.answer_text() == "1"
    assert len(ex.messages) == 5  # the record itself is untouched


def test_prompt_messages_without_answer_is_the_whole_conversation():
    ex = Example(id="a", task="count", messages=[{"role": "user", "content": "hi"}])
    assert ex.prompt_messages() == ex.messages
    assert ex.answer_text() is None


# --- every error names the file, the line, the field --------------------------------------------------


def test_line_not_json_names_file_and_line(data_dir):
    p = write_lines(data_dir / "d.jsonl", [record(), '{"id": "x", "task": '])
    err = load_error(p)
    assert err.file == str(p) and err.line == 2
    assert f"{p}:2" in str(err) and "not valid JSON" in str(err)


def test_line_that_is_json_but_not_an_object(data_dir):
    p = write_lines(data_dir / "d.jsonl", ["[1, 2]"])
    err = load_error(p)
    assert err.line == 1 and "expected a JSON object" in str(err)


@pytest.mark.parametrize("missing", ["id", "task", "messages"])
def test_missing_required_field(data_dir, missing):
    rec = record()
    del rec[missing]
    p = write_lines(data_dir / "d.jsonl", [rec])
    err = load_error(p)
    assert err.field == missing and err.line == 1
    assert "missing" in str(err) and f"'{missing}'" in str(err)


def test_unknown_field_points_to_meta(data_dir):
    p = write_lines(data_dir / "d.jsonl", [record(), record(id="b", answer="3")])
    err = load_error(p)
    assert err.line == 2 and err.field == "answer"
    assert "unknown field" in str(err) and "meta" in err.fix


def test_bad_role(data_dir):
    rec = record(messages=[{"role": "human", "content": "<image>\nHow many?"}, {"role": "assistant", "content": "3"}])
    p = write_lines(data_dir / "d.jsonl", [rec])
    err = load_error(p)
    assert err.field == "messages[0].role" and "human" in str(err)
    assert "user" in err.fix and "assistant" in err.fix


def test_message_without_content(data_dir):
    p = write_lines(data_dir / "d.jsonl", [record(messages=[{"role": "user"}])])
    err = load_error(p)
    assert err.field == "messages[0]"


def test_more_placeholders_than_images(data_dir):
    rec = record(
        messages=[{"role": "user", "content": "<image><image>\nHow many?"}, {"role": "assistant", "content": "3"}]
    )
    err = load_error(write_lines(data_dir / "d.jsonl", [rec]))
    assert err.field == "images" and "2 <image> placeholder(s)" in str(err) and "1 image(s)" in str(err)


def test_fewer_placeholders_than_images(data_dir):
    rec = record(images=["images/000001.png", "images/000002.png"])
    err = load_error(write_lines(data_dir / "d.jsonl", [rec]))
    assert err.field == "images" and "1 <image> placeholder(s)" in str(err) and "2 image(s)" in str(err)


def test_placeholder_without_any_image(data_dir):
    rec = record(images=[])
    err = load_error(write_lines(data_dir / "d.jsonl", [rec]))
    assert err.field == "images" and "0 image(s)" in str(err)


def test_missing_image_file(data_dir):
    rec = record(images=["images/nope.png"])
    err = load_error(write_lines(data_dir / "d.jsonl", [rec]))
    assert err.field == "images[0]" and "image not found" in str(err)
    assert str(data_dir / "images" / "nope.png") in str(err)


def test_missing_image_is_not_checked_when_asked_not_to(data_dir):
    rec = record(images=["images/nope.png"])
    (ex,) = load_jsonl(write_lines(data_dir / "d.jsonl", [rec]), check_images=False)
    assert ex.images == [str(data_dir / "images" / "nope.png")]


def test_corrupt_image(data_dir):
    (data_dir / "images" / "bad.png").write_bytes(b"\x00not a png at all\xff" * 10)
    rec = record(images=["images/bad.png"])
    err = load_error(write_lines(data_dir / "d.jsonl", [rec]))
    assert err.field == "images[0]" and "cannot be decoded" in str(err) and "bad.png" in str(err)


def test_truncated_png_is_corrupt(data_dir):
    good = (data_dir / "images" / "000001.png").read_bytes()
    (data_dir / "images" / "cut.png").write_bytes(good[: len(good) // 2])
    err = load_error(write_lines(data_dir / "d.jsonl", [record(images=["images/cut.png"])]))
    assert err.field == "images[0]" and "cannot be decoded" in str(err)


def test_duplicate_id(data_dir):
    p = write_lines(data_dir / "d.jsonl", [record(), record(group="other")])
    err = load_error(p)
    assert err.line == 2 and err.field == "id" and "duplicate id 'count-000001'" in str(err)


def test_unknown_task_suggests_the_closest(data_dir):
    p = write_lines(data_dir / "d.jsonl", [record(task="cuont")])
    err = load_error(p, known_tasks=TASKS)
    assert err.field == "task" and "unknown task 'cuont'" in str(err)
    assert "did you mean 'count'?" in err.fix and "classify" in err.fix


def test_unknown_task_is_fine_without_a_task_list(data_dir):
    (ex,) = load_jsonl(write_lines(data_dir / "d.jsonl", [record(task="cuont")]))
    assert ex.task == "cuont"


def test_assistant_message_with_image_placeholder(data_dir):
    rec = record(messages=[{"role": "user", "content": "How many?"}, {"role": "assistant", "content": "<image> 3"}])
    err = load_error(write_lines(data_dir / "d.jsonl", [rec]))
    assert err.field == "messages[1].content" and "assistant" in str(err)
    assert "user messages" in err.fix


def test_first_message_from_assistant(data_dir):
    rec = record(images=[], messages=[{"role": "assistant", "content": "hi"}])
    err = load_error(write_lines(data_dir / "d.jsonl", [rec]))
    assert err.field == "messages[0].role"


def test_missing_file():
    with pytest.raises(DataError, match="file not found"):
        load_jsonl("/definitely/not/here.jsonl")


def test_errors_stream_lazily_good_records_before_the_bad_one_are_yielded(data_dir):
    p = write_lines(data_dir / "d.jsonl", [record(), "oops"])
    it = iter_jsonl(p)
    assert next(it).id == "count-000001"
    with pytest.raises(DataError) as ei:
        next(it)
    assert ei.value.line == 2


def test_example_from_dict_without_file_context():
    with pytest.raises(DataError) as ei:
        example_from_dict({"id": "a", "task": "count"}, check_images=False)
    assert ei.value.field == "messages" and ei.value.file is None


# --- encoding and permissions ----------------------------------------------------------------------


def test_non_utf8_line_is_a_data_error_naming_the_line(data_dir):
    p = write_lines(data_dir / "d.jsonl", [record()])
    with p.open("ab") as f:
        f.write(b'{"id": "\xff"}\n')
    err = load_error(p)
    assert err.line == 2


def test_utf8_bom_is_accepted(data_dir):
    p = data_dir / "d.jsonl"
    p.write_text(json.dumps(record()) + "\n", encoding="utf-8-sig")
    assert [e.id for e in load_jsonl(p)] == ["count-000001"]


def test_written_files_respect_the_umask(data_dir):
    out = write_jsonl(data_dir / "w.jsonl", load_jsonl(write_lines(data_dir / "d.jsonl", [record()])))
    plain = data_dir / "plain.txt"
    plain.write_text("x")
    assert (out.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)
