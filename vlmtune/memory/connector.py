"""The memory connector's data side: conversations -> memory items -> stored embeddings -> the connector's inputs.

    items = memory_items(example)            # one item per turn: (image, text, turn position)
    kit = connector_toolkit(cfg.connector, ref)           # the encoders (the LM loaded only for vision_tower)
    features = embed_items(kit, splits.values(), cfg.connector)     # vectors cached once; then only read
    soft = connector_example(example, n_tokens)           # placeholders + the current question
    model, processor = load_for_eval(ref, "runs/x/connector")       # checks the LM and the encoders

A conversation's earlier turns become memory items, as in the seed's MA-LMM setting: item k holds the
example's image, the text of turn k (the user's words, and the answer given, for turns before the asked one;
the asked question alone for the last) and its turn position k. A rewritten example keeps its original messages
and images in meta.source_example, where the task's input checks (dialog's leak rules) read them. The LM sees none of it as text: its prompt is
one placeholder per soft token followed by the asked question, and the connector
(`vlmtune.models.connector`) writes the items' soft tokens at the placeholders. The vectors are looked up by
content hash (`text_hash` of the item's text, `file_hash` of its image) in the shared embedding caches
(`vlmtune memory embed`, `vlmtune.memory.cache`), so training and evaluation never run the encoders; an item
with no stored vector is an error naming it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from vlmtune.config import ConnectorConfig
from vlmtune.data.example import IMAGE_TOKEN, Example
from vlmtune.errors import ConfigError, DataError
from vlmtune.memory.cache import EmbeddingCache
from vlmtune.memory.items import file_hash, identity_id, text_hash
from vlmtune.memory.toolkit import Toolkit
from vlmtune.models.connector import PLACEHOLDER
from vlmtune.models.load import ModelRef, dir_hash
from vlmtune.paths import embeddings_dir

log = logging.getLogger(__name__)


def _clean(text: str) -> str:
    return " ".join(text.replace(IMAGE_TOKEN, " ").split())


def memory_items(ex: Example) -> list[dict[str, Any]]:
    """The example's turns before its answer as memory items: {"image", "text", "turn"} (module docstring)."""
    if "connector" in ex.meta:
        return ex.meta["connector"]["items"]
    if not ex.images:
        raise DataError(
            f"example '{ex.id}' has no image; a memory connector's items pair an image embedding with each turn's text",
            field="images",
            fix="give every example its image",
        )
    prompt = ex.prompt_messages()
    users = [i for i, m in enumerate(prompt) if m["role"] == "user"]
    if not users:
        raise DataError(f"example '{ex.id}' has no user message", field="messages")
    items = []
    for k, start in enumerate(users):
        end = users[k + 1] if k + 1 < len(users) else len(prompt)
        text = " ".join(_clean(m["content"]) for m in prompt[start:end])
        items.append({"image": ex.images[0], "text": text, "turn": k})
    return items


def asked_question(ex: Example) -> str:
    """The last user message, without image placeholders: what the LM is asked."""
    return _clean(ex.prompt_messages()[-1]["content"])


def connector_example(ex: Example, n_tokens: Any) -> Example:
    """The example as the connector model sees it: `n_tokens(n_items)` placeholders, then the asked question; no raw
    image. The items ride along in meta.connector."""
    if "connector" in ex.meta:
        return ex
    items = memory_items(ex)
    user = PLACEHOLDER * n_tokens(len(items)) + "\n" + asked_question(ex)
    return dataclasses.replace(
        ex,
        images=[],
        messages=[{"role": "user", "content": user}, *_answer(ex)],
        meta={
            **ex.meta,
            "connector": {"items": items},
            "source_example": {"messages": ex.messages, "images": ex.images},
        },
    )


def baseline_example(ex: Example, baseline: str) -> Example:
    """Without a connector: the asked question alone (`question`), or the whole conversation as text (`history`)."""
    if baseline == "history":
        msgs = [{"role": m["role"], "content": _clean(m["content"])} for m in ex.prompt_messages()]
    else:
        msgs = [{"role": "user", "content": asked_question(ex)}]
    return dataclasses.replace(
        ex,
        images=[],
        messages=[*msgs, *_answer(ex)],
        meta={**ex.meta, "source_example": {"messages": ex.messages, "images": ex.images}},
    )


def _answer(ex: Example) -> list[dict[str, str]]:
    answer = ex.answer_text()
    return [{"role": "assistant", "content": answer}] if answer is not None else []


class MemoryFeatures:
    """The items' stored vectors as the connector's batched inputs (the processor's `example_inputs`)."""

    def __init__(self, image_cache: EmbeddingCache, text_cache: EmbeddingCache, max_turns: int):
        self.image_cache, self.text_cache, self.max_turns = image_cache, text_cache, max_turns
        self._hashes: dict[str, str] = {}

    @property
    def image_dim(self) -> int:
        return int(self.image_cache.identity["dim"])

    @property
    def text_dim(self) -> int:
        return int(self.text_cache.identity["dim"])

    def identities(self) -> dict[str, Any]:
        return {"image": self.image_cache.identity, "text": self.text_cache.identity}

    def _image_key(self, path: str) -> str:
        if path not in self._hashes:
            self._hashes[path] = file_hash(path)
        return self._hashes[path]

    def _lookup(self, cache: EmbeddingCache, keys: list[str], names: list[str], what: str, ex: Example) -> np.ndarray:
        found = cache.get_many(keys)
        missing = [n for k, n in zip(keys, names) if k not in found]
        if missing:
            raise DataError(
                f"example '{ex.id}': no stored {what} embedding for {missing[0]!r} in {cache.dir}",
                fix="extract the embeddings first: `vlmtune memory embed DATA.jsonl` with the connector's "
                "encoders (a run does it in its embed stage)",
            )
        return np.stack([found[k] for k in keys])

    def example_inputs(self, examples: list[Example]) -> dict[str, Any]:
        """memory_image [B, M, Di], memory_text [B, M, Dt], memory_turn [B, M], memory_mask [B, M] (M = max_turns, or
        more when a row has more items, which the connector refuses; padded items are masked)."""
        import torch

        rows = [memory_items(ex) for ex in examples]
        M = max([len(r) for r in rows] + [self.max_turns])  # one width for every batch: training stacks examples
        image = torch.zeros(len(rows), M, self.image_dim)
        text = torch.zeros(len(rows), M, self.text_dim)
        turn = torch.zeros(len(rows), M, dtype=torch.long)
        mask = torch.zeros(len(rows), M, dtype=torch.bool)
        for b, (ex, items) in enumerate(zip(examples, rows)):
            if not items:
                continue
            n = len(items)
            image[b, :n] = torch.from_numpy(
                self._lookup(
                    self.image_cache,
                    [self._image_key(i["image"]) for i in items],
                    [i["image"] for i in items],
                    "image",
                    ex,
                )
            )
            text[b, :n] = torch.from_numpy(
                self._lookup(
                    self.text_cache, [text_hash(i["text"]) for i in items], [i["text"] for i in items], "text", ex
                )
            )
            turn[b, :n] = torch.tensor([int(i["turn"]) for i in items])
            mask[b, :n] = True
        return {"memory_image": image, "memory_text": text, "memory_turn": turn, "memory_mask": mask}


def connector_toolkit(c: ConnectorConfig, ref: ModelRef) -> Toolkit:
    """The connector's encoders; the VLM is loaded only when its vision tower embeds the images."""
    model = processor = None
    if c.image_encoder == "vision_tower":
        from vlmtune.models.load import load_model

        model, processor = load_model(ref.unquantized())
    kit = Toolkit.build(
        c.text_encoder, c.image_encoder, caption=False, model=model, processor=processor, model_hash=dir_hash(ref.path)
    )
    if kit.text is None or kit.image is None or kit.text_cache is None or kit.image_cache is None:
        raise ConfigError(
            f"connector.text_encoder={c.text_encoder} / connector.image_encoder={c.image_encoder}: the "
            "connector needs dense vectors for both. Fix: e.g. text_encoder: minilm (or hashing), "
            "image_encoder: vision_tower (or pixels, clip:PATH, precomputed:DIR)"
        )
    return kit


def embed_items(kit: Toolkit, example_lists: Iterable[list[Example]], c: ConnectorConfig) -> MemoryFeatures:
    """Every item's vectors in the caches (computed only where missing, flushed as shards); the features that read
    them."""
    from vlmtune.logs import progress_bar

    texts: dict[str, None] = {}
    images: dict[str, None] = {}
    for examples in example_lists:
        for ex in examples:
            for it in memory_items(ex):
                texts[it["text"]] = None
                images[it["image"]] = None
    paths, chunk = list(images), 256
    for s in progress_bar(range(0, len(paths), chunk), desc="connector embed: images"):
        kit.image_vectors(paths[s : s + chunk])
        kit.flush()
    words = list(texts)
    for s in progress_bar(range(0, len(words), chunk), desc="connector embed: texts"):
        kit.text_vectors(words[s : s + chunk])
        kit.flush()
    assert kit.image_cache is not None and kit.text_cache is not None  # set when the toolkit was built
    log.info(
        f"[connector] {len(paths)} images and {len(words)} item texts embedded (cached: "
        f"{kit.image_cache.dir}, {kit.text_cache.dir})"
    )
    return MemoryFeatures(kit.image_cache, kit.text_cache, c.max_turns)


def features_for(meta: dict[str, Any], cache: str | None = None) -> MemoryFeatures:
    """The features a saved connector reads: the caches of the encoders its connector.json names (a
    precomputed:DIR encoder's own folder), opened without loading any encoder."""
    caches = []
    for part in ("image", "text"):
        identity, spec = meta["encoders"][part], meta["specs"][part]
        folder = (
            Path(spec.partition(":")[2])
            if spec.startswith("precomputed:")
            else embeddings_dir(cache) / identity_id(identity)
        )
        if not (folder / "encoder.json").exists():
            raise ConfigError(
                f"no stored {part} embeddings of {identity.get('name')} at {folder}. Fix: extract them "
                f"with `vlmtune memory embed DATA --{part}-encoder {spec}` (or the run that trained the "
                "connector) on this machine"
            )
        caches.append(EmbeddingCache(folder, identity))
    return MemoryFeatures(caches[0], caches[1], int(meta["config"]["max_turns"]))


def connector_meta(ref: ModelRef, features: MemoryFeatures, c: ConnectorConfig) -> dict[str, Any]:
    """What connector.json records about the LM and encoders a connector belongs to."""
    return {
        "lm": {"name": ref.name, "hash": dir_hash(ref.path)},
        "encoders": features.identities(),
        "specs": {"image": c.image_encoder, "text": c.text_encoder},
    }


def load_for_eval(
    ref: ModelRef, folder: str | Path, *, features: MemoryFeatures | None = None, specs: dict[str, str] | None = None
) -> tuple[Any, Any]:
    """(model, processor) of a saved connector on `ref`'s LM. ConfigError when it was trained on another LM, or
    when `specs` (the encoders asked for now, e.g. a recipe's connector section) differ from its own."""
    from vlmtune.models.connector import check_fits, load_connector, read_meta
    from vlmtune.models.load import load_model

    meta = read_meta(folder)
    if specs is not None and specs != meta["specs"]:
        raise ConfigError(
            f"the memory connector {folder} was trained with encoders {meta['specs']}, not {specs}. "
            "Fix: set connector.image_encoder / connector.text_encoder to the ones connector.json names, "
            "or train a connector for these encoders"
        )
    features = features or features_for(meta)
    check_fits(meta, lm_name=ref.name, lm_hash=dir_hash(ref.path), encoders=features.identities(), folder=folder)
    lm, processor = load_model(ref)
    return load_connector(lm, processor, folder, features)


@dataclasses.dataclass
class ConnectorRun:
    """A run's examples as the connector sees them (`soft`) and as the no-connector baseline sees them (`plain`),
    and what training needs (vlmtune.train.trainer.ConnectorSetup)."""

    soft: dict[str, list[Example]]
    plain: dict[str, list[Example]]
    setup: Any


def prepare_run(cfg: Any, splits: dict[str, list[Example]], ref: ModelRef) -> ConnectorRun:
    """The embed stage (every item's vectors cached, computed only where missing) and the rewritten splits."""
    from vlmtune.train.trainer import ConnectorSetup

    c = cfg.connector
    features = embed_items(connector_toolkit(c, ref), splits.values(), c)
    soft = {k: [connector_example(ex, token_counter(c)) for ex in v] for k, v in splits.items()}
    plain = {k: [baseline_example(ex, c.baseline) for ex in v] for k, v in splits.items()}
    return ConnectorRun(soft, plain, ConnectorSetup(c, features, connector_meta(ref, features, c)))


def token_counter(c: ConnectorConfig) -> Any:
    """n items -> the soft tokens (placeholders) the connector gives them."""
    return (lambda n: c.queries) if c.queries else (lambda n: n * c.tokens_per_item)


def for_connector(examples: list[Example], folder: str | Path) -> list[Example]:
    """Examples (a run's data/test.jsonl, say) as the saved connector in `folder` sees them."""
    from vlmtune.models.connector import read_meta

    c = ConnectorConfig(**read_meta(folder)["config"])
    return [connector_example(ex, token_counter(c)) for ex in examples]
