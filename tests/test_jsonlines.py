"""The one JSON-lines parser (vlmtune.jsonlines): strict and lenient, BOM, blank lines, bad bytes, streaming."""

from __future__ import annotations

import pytest

from vlmtune.errors import DataError
from vlmtune.jsonlines import read_json_lines, starts_with_list


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_values_numbers_bom_and_blank_lines(tmp_path):
    p = write(tmp_path / "a.jsonl", b'\xef\xbb\xbf{"a": 1}\n\n   \n{"b": "\xc3\xa9"}\r\n[1, 2]')
    lines = list(read_json_lines(p))
    assert [(ln.number, ln.value) for ln in lines] == [(1, {"a": 1}), (4, {"b": "é"}), (5, [1, 2])]
    assert lines[1].text == '{"b": "é"}' and all(ln.error is None for ln in lines)


def test_strict_raises_at_the_bad_line_after_yielding_the_good_ones(tmp_path):
    p = write(tmp_path / "a.jsonl", b'{"a": 1}\n{oops\n{"a": 3}\n')
    it = read_json_lines(p, fix="each line must be one prediction row")
    assert next(it).value == {"a": 1}
    with pytest.raises(DataError) as ei:
        next(it)
    e = ei.value
    assert (e.file, e.line) == (str(p), 2) and "not valid JSON" in str(e)
    assert e.fix == "each line must be one prediction row"


def test_lenient_returns_bad_lines_with_their_error(tmp_path):
    p = write(tmp_path / "a.jsonl", b'{"a": 1}\n{"id": "\xff"}\nnope\n{"a": 4}\n')
    lines = list(read_json_lines(p, lenient=True))
    assert [ln.number for ln in lines] == [1, 2, 3, 4]
    assert lines[1].error is not None and "not valid UTF-8" in str(lines[1].error) and lines[1].error.line == 2
    assert lines[1].error.fix == "save the file as UTF-8" and "\ufffd" in lines[1].text
    assert "not valid JSON" in str(lines[2].error) and lines[2].text == "nope"
    assert lines[3].value == {"a": 4} and lines[3].error is None


def test_a_pretty_printed_json_file_gets_its_own_fix(tmp_path):
    p = write(tmp_path / "a.jsonl", b'{\n  "a": 1\n}\n')
    with pytest.raises(DataError) as ei:
        list(read_json_lines(p, what="a JSONL data file"))
    assert ei.value.line == 1 and "a JSONL data file" in ei.value.fix and "several lines" in ei.value.fix


def test_missing_file_is_an_error_even_when_lenient(tmp_path):
    with pytest.raises(DataError, match="file not found") as ei:
        list(read_json_lines(tmp_path / "nope.jsonl", lenient=True, what="the predictions"))
    assert "the predictions" in ei.value.fix


def test_it_streams(tmp_path):
    """Lines are read as they are asked for: a line appended after the first was yielded is still read
    (a reader that loaded the file up front would not see it)."""
    p = write(tmp_path / "a.jsonl", b'{"i": 0}\n')
    it = read_json_lines(p)
    assert next(it).value == {"i": 0}
    with p.open("ab") as f:
        f.write(b'{"i": 1}\n')
    assert [ln.value for ln in it] == [{"i": 1}]


def test_starts_with_list(tmp_path):
    assert starts_with_list(write(tmp_path / "a.json", b'\xef\xbb\xbf  \n [{"a": 1}]'))
    assert not starts_with_list(write(tmp_path / "b.jsonl", b'{"a": [1]}\n'))
