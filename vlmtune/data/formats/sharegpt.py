"""LLaMA-Factory sharegpt / OpenAI-messages data with `images`, from JSON/JSONL files or a `datasets` folder.

    # a LLaMA-Factory data folder: dataset_info.json names the file, its formatting, columns and tags
    reader = read_sharegpt("data/dataset_info.json", dataset="mall_count", task="count")
    # a file without dataset_info.json: say how it is laid out (defaults per formatting, below)
    reader = read_sharegpt("chat.jsonl", formatting="openai", task="caption")
    # a folder written by datasets' save_to_disk, with the same column / tag mapping
    reader = read_hf_disk("mall_ds", split="train", task="count", formatting="sharegpt")

dataset_info.json (LLaMA-Factory's data/README): `{"NAME": {"file_name": "x.json", "formatting":
"sharegpt" | "openai", "columns": {"messages": "conversations", "images": "images", "system": ...},
"tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
"system_tag": "system"}}}`. Defaults: sharegpt = conversations / from / value / human / gpt / system;
openai = messages / role / content / user / assistant / system. `columns` / `tags` given to the reader
override the entry's. Only local files (`file_name`) are read; hub entries are a ConfigError.

Messages: an optional system message (the `system` column, or a first message with system_tag), then
user and assistant turns alternating, ending with the assistant's answer. Content is a string, or an
OpenAI list of parts (`{"type": "text", "text"}`, `{"type": "image_url", "image_url": {"url"}}`,
`{"type": "image", "image"}`): text parts are joined with newlines and each image part becomes an
`<image>` placeholder with its image (then there must be no `images` column value as well).
Observation / function-call turns are not supported (an error).

Images: `images` is a path or a list of paths, relative to `media_dir` (default: the folder of
dataset_info.json, else of the data file; for `read_hf_disk`, the folder holding the dataset
folder) or absolute; `datasets` Image values ({"path", "bytes"}) use the path when it exists, else the
bytes are written once to `extract_images_to` (required then). `image_placeholder` (LLaMA-Factory's
IMAGE_PLACEHOLDER, default `<image>`) is rewritten to `<image>`.

Records WITHOUT any placeholder: LLaMA-Factory's LLaVA-style preprocessing puts the image token in
front of the first prompt message (`prompt[0]["content"] = image_token + prompt[0]["content"]`); we do
the same, one `<image>` per image in order, followed by a newline, at the start of the first user
message. A record with placeholders whose number differs from its images is an error (LLaMA-Factory
raises for that too).

The Example: task = the caller's `task`; id = the record's `id` field if any, else
`{dataset or file stem}-{index:06d}`; group = the record's `group` field if any, else the id;
options = the caller's `options` (e.g. the labels of a classify task); meta = {"source", "index"}.
target (`target_from`):
  - "answer": the final assistant message, stripped (for free-text tasks);
  - "parse": the final assistant message parsed by the registered task (count -> int, classify -> a
    label from `options`, mcq -> option index); a parse failure is an error naming the record;
  - "auto" (default): "parse" when `task` is registered in vlmtune.registry.TASKS, else "answer";
  - "column:NAME": the record's NAME field, as is.

With `skip_invalid=True` bad records are skipped, counted and written to `<file>.rejects.jsonl`
(`<dataset folder>.rejects.jsonl` for read_hf_disk). JSONL files and `datasets` folders are streamed.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN, Record, RecordReader
from vlmtune.data.formats.convert import (  # noqa: F401  (names the readers and tests use)
    DEFAULT_COLUMNS,
    DEFAULT_TAGS,
    FORMATTINGS,
    HUB_KEYS,
    UNSUPPORTED_COLUMNS,
    Converter,
    Layout,
    _jsonable,
    _undecoded,
)
from vlmtune.data.formats.records import json_records
from vlmtune.errors import ConfigError, DataError
from vlmtune.registry import FORMATS


def load_dataset_info(path: str | os.PathLike, dataset: str | None) -> tuple[str, dict[str, Any], Path]:
    """(dataset name, its entry, the dataset_info.json path) from a dataset_info.json file or its folder."""
    path = Path(path)
    info_path = path / "dataset_info.json" if path.is_dir() else path
    if not info_path.exists():
        raise DataError(
            "file not found",
            file=str(info_path),
            fix="give a LLaMA-Factory dataset_info.json (or the folder holding it)",
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataError(
            f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})",
            file=str(info_path),
            line=e.lineno,
            fix="repair dataset_info.json",
        ) from None
    if not isinstance(info, dict) or not info:
        raise DataError("expected a non-empty object {dataset name: entry}", file=str(info_path))
    if dataset is None:
        if len(info) != 1:
            raise ConfigError(
                f"{info_path} describes {len(info)} datasets; choose one with dataset=NAME "
                f"(available: {', '.join(sorted(info))})"
            )
        dataset = next(iter(info))
    if dataset not in info:
        close = difflib.get_close_matches(dataset, list(info), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"no dataset '{dataset}' in {info_path}.{hint} Available: {', '.join(sorted(info))}")
    entry = info[dataset]
    if not isinstance(entry, dict):
        raise DataError("the entry must be an object", file=str(info_path), field=dataset)
    hub = [k for k in HUB_KEYS if entry.get(k)]
    if hub:
        raise ConfigError(
            f"{info_path}: dataset '{dataset}' is loaded from {hub[0]}; vlmtune reads local files "
            "only: download it and point file_name at the local copy"
        )
    return dataset, entry, info_path


@FORMATS.register("sharegpt", help="LLaMA-Factory sharegpt / OpenAI messages + images (JSON/JSONL, dataset_info.json)")
def read_sharegpt(
    path: str | os.PathLike,
    *,
    task: str,
    dataset: str | None = None,
    target_from: str = "auto",
    options: Sequence[Any] | None = None,
    formatting: str | None = None,
    columns: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    media_dir: str | os.PathLike | None = None,
    image_placeholder: str = IMAGE_TOKEN,
    skip_invalid: bool = False,
    check_images: bool = True,
) -> RecordReader:
    """Stream Examples from a sharegpt/OpenAI-style JSON or JSONL file (see the module docstring).

    path: the data file, or a dataset_info.json (or its folder) with `dataset` naming the entry.
    task: the Example's task; target_from: "auto" | "answer" | "parse" | "column:NAME".
    Returns a RecordReader: iterate it; afterwards `.rejected` counts skipped records.
    """
    path = Path(path)
    if path.is_dir() or path.name == "dataset_info.json":
        dataset, entry, info_path = load_dataset_info(path, dataset)
        file_name = entry.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise DataError(
                "no file_name",
                file=str(info_path),
                field=f"{dataset}.file_name",
                fix="give the data file's name, relative to dataset_info.json's folder",
            )
        data_path = info_path.parent / file_name
        if data_path.is_dir():
            raise ConfigError(
                f"{info_path}: file_name '{file_name}' is a folder; give one JSON/JSONL file "
                "(or read a save_to_disk folder with the 'hf_disk' format)"
            )
        layout = Layout.make(
            formatting or entry.get("formatting"),
            {**(entry.get("columns") or {}), **(columns or {})},
            {**(entry.get("tags") or {}), **(tags or {})},
            f"{info_path} [{dataset}]",
        )
        base = Path(media_dir) if media_dir is not None else info_path.parent
    else:
        data_path, layout = path, Layout.make(formatting, columns, tags, str(path))
        base = Path(media_dir) if media_dir is not None else path.parent
    convert = Converter(
        layout,
        task=task,
        target_from=target_from,
        options=options,
        media_dir=base,
        image_placeholder=image_placeholder,
        check_images=check_images,
        id_prefix=dataset or data_path.stem,
        file=str(data_path),
    )
    return RecordReader(
        data_path,
        json_records(data_path, convert, what=f"a {layout.formatting} JSON list or JSONL file"),
        skip_invalid=skip_invalid,
    )


@FORMATS.register(
    "hf_disk", help="a datasets save_to_disk folder with sharegpt / OpenAI messages + images columns", extra="hf"
)
def read_hf_disk(
    path: str | os.PathLike,
    *,
    task: str,
    split: str | None = None,
    dataset_info: str | None = None,
    dataset: str | None = None,
    target_from: str = "auto",
    options: Sequence[Any] | None = None,
    formatting: str | None = None,
    columns: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    media_dir: str | os.PathLike | None = None,
    extract_images_to: str | os.PathLike | None = None,
    image_placeholder: str = IMAGE_TOKEN,
    skip_invalid: bool = False,
    check_images: bool = True,
) -> RecordReader:
    """Stream Examples from a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.

    split: which split of a DatasetDict (not needed for a Dataset or a one-split DatasetDict).
    dataset_info + dataset: borrow formatting/columns/tags from a LLaMA-Factory entry (its file_name is ignored).
    extract_images_to: where embedded image bytes are written (needed only when a row has no usable path).
    Other options as in read_sharegpt.
    """
    from vlmtune.extras import require

    require("hf", "data.format=hf_disk")
    import datasets

    path = Path(path)
    if not path.is_dir():
        raise DataError("not a folder", file=str(path), fix="give a folder written by datasets' save_to_disk")
    entry: dict[str, Any] = {}
    if dataset_info is not None:
        dataset, entry, _ = load_dataset_info(dataset_info, dataset)
    layout = Layout.make(
        formatting or entry.get("formatting"),
        {**(entry.get("columns") or {}), **(columns or {})},
        {**(entry.get("tags") or {}), **(tags or {})},
        str(path),
    )
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise DataError(
            f"cannot be loaded with datasets.load_from_disk ({e})",
            file=str(path),
            fix="give a folder written by save_to_disk (it holds dataset_info.json / dataset_dict.json)",
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split is None and len(ds) == 1:
            split = next(iter(ds))
        if split not in ds:
            raise ConfigError(
                f"{path} holds splits {', '.join(ds)}; choose one with split=NAME"
                + (f" ('{split}' is not one of them)" if split is not None else "")
            )
        ds = ds[split]
    for col in (layout.messages,):
        if col not in ds.column_names:
            close = difflib.get_close_matches(col, ds.column_names, n=1)
            raise DataError(
                f"no column '{col}'",
                file=str(path),
                field="columns.messages",
                fix=(f"did you mean '{close[0]}'? " if close else "") + f"columns: {', '.join(ds.column_names)}",
            )
    if layout.images and layout.images in ds.column_names:
        ds = ds.cast_column(layout.images, _undecoded(ds.features[layout.images]))  # paths/bytes, not PIL images
    convert = Converter(
        layout,
        task=task,
        target_from=target_from,
        options=options,
        media_dir=Path(media_dir) if media_dir is not None else path.parent,
        image_placeholder=image_placeholder,
        check_images=check_images,
        id_prefix=dataset or path.name + (f"-{split}" if split else ""),
        file=str(path),
        extract_to=Path(extract_images_to) if extract_images_to is not None else None,
    )

    def records() -> Iterator[Record]:
        for i, row in enumerate(ds):
            name = f"row {i}"
            yield Record(
                name=name,
                raw=json.dumps(_jsonable(row), ensure_ascii=False, default=str),
                build=functools.partial(convert, row, None, name, i),
            )

    return RecordReader(path, records(), skip_invalid=skip_invalid)
