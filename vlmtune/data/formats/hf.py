"""Hugging Face datasets, by hub name or from a local folder laid out as a hub dataset repo (parquet/JSON
files + README.md), loaded with `datasets.load_dataset`.

    # simple columns through a small template (the question column, or a fixed prompt)
    reader = read_hf("owner/cctv-counts", task="count", split="train",
                     columns={"image": "frame", "question": "q", "answer": "count"})
    # sharegpt / OpenAI messages + images, mapped as the sharegpt reader maps them
    reader = read_hf("owner/chat-vqa", task="caption", formatting="openai", columns={"messages": "conv"})
    # a local copy (e.g. `hf download owner/name --repo-type dataset --local-dir DIR`)
    reader = read_hf("DIR", task="classify", columns={"image": "img", "label": "label"}, prompt="What scene is this?")

Two column mappings:
- messages (when `formatting` is given or `columns` names `messages`): as read_sharegpt (formatting,
  columns {messages, images, system}, tags);
- simple (otherwise): `columns` maps image, question, answer, options, label, id, group to the dataset's
  column names (defaults: image, question, answer; the rest unset). The user message is `prompt`
  formatted with the row (`{question}` by default, any column by name: "{question} Answer with a number."),
  the assistant message is the `answer` column, or the name of the `label` column's class (a ClassLabel's
  names also become the examples' options). `options`: a column holding each row's options.
The target is read from the answer by the task (`target_from`, as in read_sharegpt).

Images: a datasets Image column (or a path string, relative to the dataset folder); images stored as bytes
are written once to `extract_images_to` (a run writes them to runs/<name>/data/images/).

By name: with the hub reachable, `load_dataset(name)` (downloads go to the usual Hugging Face cache).
Offline (HF_HUB_OFFLINE=1, or the hub unreachable) the cached snapshot of the dataset is used when there
is one; otherwise the error names the dataset and how to get it. `streaming=True` reads rows as they come
(no arrow cache is built).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN, Example, Record, RecordReader
from vlmtune.data.formats.convert import Converter, Layout, _jsonable, _undecoded
from vlmtune.errors import ConfigError, DataError
from vlmtune.registry import FORMATS

log = logging.getLogger(__name__)

SIMPLE_COLUMNS = {
    "image": "image",
    "question": "question",
    "answer": "answer",
    "options": None,
    "label": None,
    "id": None,
    "group": None,
}
_SIMPLE_LAYOUT = Layout.make("openai", {"messages": "messages", "images": "images"}, None, "hf")


@FORMATS.register("hf", help="a Hugging Face dataset by hub name or local hub-style folder, with a column mapping")
def read_hf(
    path: str | os.PathLike,
    *,
    task: str,
    split: str = "train",
    config: str | None = None,
    revision: str | None = None,
    streaming: bool = False,
    columns: Mapping[str, Any] | None = None,
    prompt: str = "{question}",
    formatting: str | None = None,
    tags: Mapping[str, Any] | None = None,
    options: Sequence[Any] | None = None,
    target_from: str = "auto",
    extract_images_to: str | os.PathLike | None = None,
    skip_invalid: bool = False,
    check_images: bool = True,
) -> RecordReader:
    """Stream Examples from one split of a Hugging Face dataset (see the module docstring).

    path: a hub id (owner/name) or a local folder; split/config/revision as in `datasets.load_dataset`.
    """
    import datasets

    messages = formatting is not None or "messages" in (columns or {})
    ds, where = load_hf(str(path), config=config, split=split, revision=revision, streaming=streaming)
    names = list(ds.column_names or [])
    if messages:
        layout = Layout.make(formatting, columns, tags, f"{path} [{split}]")
        need: dict[str, str | None] = {"columns.messages": layout.messages}
        image_col = layout.images if layout.images in names else None
    else:
        cols = _simple_columns(columns)
        need = {k: cols[k] for k in ("label" if cols["label"] else "answer", "options", "id", "group") if cols[k]}
        if "{question}" in prompt:
            need["question"] = cols["question"]
        if columns and columns.get("image"):
            need["image"] = cols["image"]
        need = {f"columns.{k}": v for k, v in need.items()}
        image_col = cols["image"] if cols["image"] in names else None
    missing = {k: v for k, v in need.items() if names and v not in names}
    if missing:
        key, col = next(iter(missing.items()))
        raise DataError(
            f"no column '{col}' (split '{split}')",
            file=str(path),
            field=key,
            fix=f"map {key} to one of the dataset's columns: {', '.join(names)}",
        )
    if image_col is not None:
        ds = ds.cast_column(image_col, _undecoded(ds.features[image_col]))  # path/bytes, not decoded images
    label_names: list[str] | None = None
    if not messages and cols["label"] is not None:
        feature = (ds.features or {}).get(cols["label"])
        label_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    convert = Converter(
        layout if messages else _SIMPLE_LAYOUT,
        task=task,
        target_from=target_from,
        options=options if options is not None else label_names,
        media_dir=where,
        image_placeholder=IMAGE_TOKEN,
        check_images=check_images,
        id_prefix=f"{Path(str(path)).name}-{split}",
        file=str(path),
        extract_to=Path(extract_images_to) if extract_images_to is not None else None,
    )
    convert.row_options = not messages and cols["options"] is not None
    file = str(path)

    def build(row: Mapping[str, Any], name: str, i: int) -> Example:
        return convert(row if messages else simple_record(row, cols, prompt, label_names, name, file), None, name, i)

    def records() -> Iterator[Record]:
        for i, row in enumerate(ds):
            name = f"{split} row {i}"
            yield Record(
                name=name,
                raw=json.dumps(_jsonable(row), ensure_ascii=False, default=str),
                build=functools.partial(build, row, name, i),
            )

    reader_path = Path(str(path)) if Path(str(path)).is_dir() else Path(f"{str(path).replace('/', '--')}-{split}")
    return RecordReader(reader_path, records(), skip_invalid=skip_invalid)


def _simple_columns(columns: Mapping[str, Any] | None) -> dict[str, str | None]:
    unknown = sorted(set(columns or {}) - set(SIMPLE_COLUMNS))
    if unknown:
        raise ConfigError(
            f"hf columns {unknown} are not known; simple columns: {', '.join(SIMPLE_COLUMNS)} "
            "(or give formatting: sharegpt | openai with columns.messages)"
        )
    return {**SIMPLE_COLUMNS, **{k: (str(v) if v is not None else None) for k, v in (columns or {}).items()}}


def simple_record(
    row: Mapping[str, Any],
    cols: Mapping[str, str | None],
    prompt: str,
    label_names: list[str] | None,
    name: str,
    file: str,
) -> dict[str, Any]:
    """A simple-columns row as an OpenAI-messages record the shared Converter reads."""

    def fail(msg: str, field: str, fix: str) -> DataError:
        return DataError(f"{name}: {msg}", file=file, field=field, fix=fix)

    try:
        question = prompt.format_map({k: v for k, v in row.items() if not isinstance(v, (bytes, Mapping))})
    except (KeyError, IndexError, ValueError) as e:
        raise fail(
            f"the prompt template {prompt!r} cannot be filled ({type(e).__name__}: {e})",
            "prompt",
            f"use {{column}} fields of the dataset's columns: {', '.join(row)}",
        ) from None
    if cols["label"] is not None:
        value = row.get(cols["label"])
        answer = (
            label_names[value]
            if label_names is not None and isinstance(value, int) and 0 <= value < len(label_names)
            else value
        )
    else:
        answer = row.get(cols["answer"]) if cols["answer"] is not None else None
    if answer is None or str(answer).strip() == "":
        field = cols["label"] or cols["answer"] or "answer"
        raise fail(
            "no answer",
            f"columns.{'label' if cols['label'] else 'answer'}",
            f"every row needs a value in column '{field}'",
        )
    image = row.get(cols["image"]) if cols["image"] else None
    images = [] if image is None else list(image) if isinstance(image, (list, tuple)) else [image]
    rec: dict[str, Any] = {
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": str(answer)}],
        "images": images,
    }
    for key in ("id", "group", "options"):
        col = cols[key]
        if col is not None and row.get(col) is not None:
            rec[key] = row[col]
    return rec


def load_hf(name: str, *, config: str | None, split: str, revision: str | None, streaming: bool) -> tuple[Any, Path]:
    """(one split of the dataset, the folder its relative image paths are under). A local folder is loaded
    as it is; a hub name from the hub, or offline from its cached snapshot."""
    from vlmtune.extras import require

    require("hf", "data.source=hf")
    import datasets

    local = Path(name)
    if local.is_dir():
        return _load(datasets, str(local), config, split, None, streaming, name), local
    from huggingface_hub import constants, snapshot_download

    if not constants.HF_HUB_OFFLINE:
        try:
            return _load(datasets, name, config, split, revision, streaming, name), Path.cwd()
        except (ConnectionError, TimeoutError) as e:
            log.warning("[data] the hub is not reachable (%s); looking for %s in the local cache", e, name)
    try:
        snapshot = snapshot_download(name, repo_type="dataset", revision=revision, local_files_only=True)
    except (FileNotFoundError, OSError, ValueError):
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub cannot be reached"
        raise DataError(
            f"hub dataset '{name}' is not in the local cache ({constants.HF_HUB_CACHE}) and {why}",
            file=name,
            fix=f"on a machine with access run `hf download {name} --repo-type dataset` (the same cache; "
            f"or `huggingface-cli download {name} --repo-type dataset --local-dir DIR` and give the "
            "folder DIR instead of the name)",
        ) from None
    log.info("[data] %s: offline, using the cached snapshot %s", name, snapshot)
    return _load(datasets, snapshot, config, split, None, streaming, name), Path(snapshot)


def _load(
    datasets: Any, where: str, config: str | None, split: str, revision: str | None, streaming: bool, name: str
) -> Any:
    try:
        return datasets.load_dataset(where, config, split=split, revision=revision, streaming=streaming)
    except ValueError as e:
        if "split" in str(e).lower() or "config" in str(e).lower():
            raise ConfigError(f"{name}: {e} (set data.hf_split / data.hf_config)") from None
        raise DataError(
            f"cannot be loaded with datasets.load_dataset ({e})",
            file=name,
            fix="check that the folder holds a dataset (parquet/JSON/CSV files, README.md)",
        ) from None
    except datasets.exceptions.DatasetNotFoundError as e:
        raise DataError(
            f"no such dataset ({e})",
            file=name,
            fix="check the name (owner/name), or give a local folder laid out as a hub dataset",
        ) from None
