"""A trainable memory connector: stored embeddings of memory items -> soft prompt tokens of a frozen causal LM.

    connector = MemoryConnector(ConnectorShape(image_dim=1024, text_dim=1024, lm_hidden=2048), cfg.connector)
    model = ConnectorLM(lm, connector, token_id)          # the LM frozen; only the connector trains
    processor = ConnectorProcessor(processor, features)   # adds each example's memory tensors to its inputs
    save_connector(model, "runs/x/connector", meta)       # connector.safetensors + connector.json
    model, processor = load_connector(ref, "runs/x/connector", features, expect)

Each memory item is (image embedding, text embedding, turn position), read from the embedding cache
(`vlmtune.memory.connector`), never recomputed. The connector fuses the two embeddings (a linear layer or a
small MLP over their concatenation: the seed's Linear(2048 -> 1024)), adds a learned turn-position embedding
(Embedding(max_turns, d)), and maps each item to `tokens_per_item` vectors of the LM's embedding size; with
`queries` > 0 a small query block (learned queries cross-attending to the items, Q-Former-like) turns any
number of items into that many tokens instead.

Where the soft tokens go: the prompt holds one placeholder token (`PLACEHOLDER`, added to the tokenizer when
it lacks it) per soft token, in the user turn, like a VLM's image tokens; `ConnectorLM` embeds the prompt with
the LM's own embedding table and writes the connector's outputs at the placeholder positions, then runs the
LM on `inputs_embeds`. The sequence length never changes, so training (assistant-only loss, answer-only
logits), batched generation with left padding and option scoring with a shared KV cache work unchanged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmtune.config import ConnectorConfig
from vlmtune.errors import ConfigError, DataError
from vlmtune.processing import tokenizer_of

log = logging.getLogger(__name__)

PLACEHOLDER = "<memory>"
WEIGHTS = "connector.safetensors"
META = "connector.json"
MEMORY_KEYS = ("memory_image", "memory_text", "memory_turn", "memory_mask")


@dataclass(frozen=True)
class ConnectorShape:
    """The dimensions a connector is built for: its encoders' and its LM's."""

    image_dim: int
    text_dim: int
    lm_hidden: int


class QueryBlock(nn.Module):
    """Learned queries cross-attending to the items (then a feed-forward layer), `layers` times: a small
    Q-Former. Padded items are masked out."""

    def __init__(self, d: int, queries: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, d) * 0.02)
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True) for _ in range(layers)
        )
        self.ff = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)) for _ in range(layers)
        )
        self.norm = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))

    def forward(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.queries[None].expand(items.shape[0], -1, -1)
        for attn, ff, norm in zip(self.attn, self.ff, self.norm):
            q = q + attn(norm(q), items, items, key_padding_mask=~mask, need_weights=False)[0]
            q = q + ff(q)
        return q


class MemoryConnector(nn.Module):
    """[image emb; text emb] -> fusion -> + turn embedding -> (query block) -> LM-sized soft tokens."""

    def __init__(self, shape: ConnectorShape, cfg: ConnectorConfig):
        super().__init__()
        self.shape, self.cfg = shape, cfg
        d = cfg.fusion_dim or shape.lm_hidden
        if cfg.queries and d % cfg.query_heads:
            raise ConfigError(
                f"connector.query_heads={cfg.query_heads} does not divide the fused width {d} (connector."
                "fusion_dim, or the LM's hidden size when 0). Fix: choose query_heads dividing it"
            )
        cat = shape.image_dim + shape.text_dim
        if cfg.fusion == "linear":
            self.fusion: nn.Module = nn.Linear(cat, d)
        else:
            self.fusion = nn.Sequential(nn.Linear(cat, d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d, d))
        self.position = nn.Embedding(cfg.max_turns, d) if cfg.position else None
        self.query = QueryBlock(d, cfg.queries, cfg.query_layers, cfg.query_heads, cfg.dropout) if cfg.queries else None
        self.out = nn.Linear(d, shape.lm_hidden * (1 if cfg.queries else cfg.tokens_per_item))

    def tokens_for(self, n_items: int) -> int:
        """Soft tokens (placeholders in the prompt) for `n_items` memory items."""
        return self.cfg.queries or n_items * self.cfg.tokens_per_item

    def forward(self, image: torch.Tensor, text: torch.Tensor, turn: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, M, Di], [B, M, Dt], [B, M] turns, [B, M] valid -> [B, S, lm_hidden] soft tokens, valid ones first."""
        if turn.numel() and int(turn.max()) >= self.cfg.max_turns:
            raise DataError(
                f"a memory item's turn position is {int(turn.max())}, beyond connector.max_turns={self.cfg.max_turns}",
                fix="raise connector.max_turns (it fixes the size of the turn-position embedding)",
            )
        x = self.fusion(torch.cat([image, text], dim=-1))
        if self.position is not None:
            x = x + self.position(turn)
        if self.query is not None:
            return self.out(self.query(x, mask))
        B, M = mask.shape
        return self.out(x).reshape(B, M * self.cfg.tokens_per_item, self.shape.lm_hidden)


def _unwrap(lm: Any) -> Any:
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


class ConnectorLM(nn.Module):
    """A causal LM (frozen; optionally with LoRA) whose placeholder tokens are the connector's soft tokens.

    Presents the LM's `config`, `generation_config`, body (`model`) and output embeddings, so the trainer's
    answer-only loss, `generate_tokens` and `score_options` use it as they use the LM itself."""

    def __init__(self, lm: Any, connector: MemoryConnector, token_id: int, pad_id: int):
        super().__init__()
        self.lm, self.connector = lm, connector
        self.token_id, self.pad_id = int(token_id), int(pad_id)

    @property
    def config(self) -> Any:
        return _unwrap(self.lm).config

    @property
    def generation_config(self) -> Any:
        return _unwrap(self.lm).generation_config

    @property
    def model(self) -> Any:  # the body whose last hidden states the LM head reads (vlmtune.train.loss)
        return _unwrap(self.lm).model

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.get_input_embeddings().weight.dtype

    def get_output_embeddings(self) -> Any:
        return _unwrap(self.lm).get_output_embeddings()

    def get_input_embeddings(self) -> Any:
        return self.lm.get_input_embeddings()

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]  # same call, a subset
        """The trainable weights only (the connector's, and LoRA's when the LM has it): what a checkpoint keeps."""
        full = super().state_dict(*args, **kwargs)
        keep = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in full.items() if k in keep or k.startswith("connector.")}

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load a checkpoint of the trainable weights (`state_dict`); the frozen LM's weights are not in it. Missing
        trainable weights are an error."""
        from torch.nn.modules.module import _IncompatibleKeys

        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if k in self.state_dict()]
        if missing:
            raise ConfigError(
                f"the checkpoint lacks trainable weights of the memory connector: {missing[:5]}. Fix: "
                "resume from a checkpoint of the same connector settings, or start afresh"
            )
        return _IncompatibleKeys([], result.unexpected_keys)

    def safe_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The ids with placeholders replaced by the pad id (the placeholder may lie beyond the LM's vocabulary)."""
        return input_ids.masked_fill(input_ids == self.token_id, self.pad_id)

    def embed(self, input_ids: torch.Tensor, memory: dict[str, torch.Tensor]) -> torch.Tensor:
        """The LM's input embeddings with the soft tokens written at the placeholder positions."""
        embeds = self.lm.get_input_embeddings()(self.safe_ids(input_ids))
        slots = input_ids == self.token_id
        if not bool(slots.any()):
            return embeds
        if not all(k in memory for k in MEMORY_KEYS):
            raise DataError(
                f"the prompt holds {PLACEHOLDER} placeholders but no memory items came with it",
                fix="give the examples' memory (meta.connector) through the connector's processor",
            )
        mask = memory["memory_mask"].bool()
        param = next(self.connector.parameters())
        soft = self.connector(
            memory["memory_image"].to(param), memory["memory_text"].to(param), memory["memory_turn"].long(), mask
        )
        need = slots.sum(dim=1)
        have = torch.tensor([self.connector.tokens_for(int(n)) for n in mask.sum(dim=1)], device=need.device)
        if not torch.equal(need, have):
            raise DataError(
                f"rows hold {need.tolist()} {PLACEHOLDER} placeholders but their memory items make "
                f"{have.tolist()} soft tokens",
                fix="build the examples with vlmtune.memory.connector "
                "(its prompts hold one placeholder per soft token)",
            )
        valid = torch.cat([soft[b, : int(n)] for b, n in enumerate(need)]).to(embeds.dtype)
        return embeds.masked_scatter(slots[..., None], valid)

    def forward(
        self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> Any:
        memory = {k: kwargs.pop(k) for k in MEMORY_KEYS if k in kwargs}
        if kwargs.get("inputs_embeds") is None:
            if input_ids is None:
                raise ValueError("ConnectorLM needs input_ids (or inputs_embeds)")
            kwargs["inputs_embeds"] = self.embed(input_ids, memory)
        return self.lm(attention_mask=attention_mask, **kwargs)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """The LM's generate from the connector's embeddings; returns prompt ids + new ids, as generate does."""
        memory = {k: kwargs.pop(k) for k in MEMORY_KEYS if k in kwargs}
        embeds = self.embed(input_ids, memory)
        out = self.lm.generate(
            input_ids=self.safe_ids(input_ids), inputs_embeds=embeds, attention_mask=attention_mask, **kwargs
        )
        if out.shape[1] < input_ids.shape[1] or not torch.equal(out[:, : input_ids.shape[1]], self.safe_ids(input_ids)):
            out = torch.cat([self.safe_ids(input_ids), out], dim=1)  # generate returned the new tokens only
        return out


class ConnectorProcessor:
    """The LM's processor (or tokenizer), plus `example_inputs(examples)`: each example's memory tensors."""

    def __init__(self, processor: Any, features: Any):
        self._processor, self.features = processor, features

    @property
    def tokenizer(self) -> Any:
        return tokenizer_of(self._processor)

    def example_inputs(self, examples: list) -> dict[str, torch.Tensor]:
        return self.features.example_inputs(examples)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._processor(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._processor, name)


def add_placeholder(processor: Any) -> int:
    """The placeholder's token id, added to the tokenizer as a special token when it lacks it."""
    tok = tokenizer_of(processor)
    if PLACEHOLDER not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [PLACEHOLDER]}, replace_extra_special_tokens=False)
    return int(tok.convert_tokens_to_ids(PLACEHOLDER))


def lm_hidden_size(lm: Any) -> int:
    return int(lm.get_input_embeddings().weight.shape[1])


def build(lm: Any, processor: Any, features: Any, cfg: ConnectorConfig) -> tuple[ConnectorLM, ConnectorProcessor]:
    """A fresh connector on `lm` (frozen here), with input sizes from the features' encoders."""
    token_id = add_placeholder(processor)
    shape = ConnectorShape(features.image_dim, features.text_dim, lm_hidden_size(lm))
    lm.requires_grad_(False)
    connector = MemoryConnector(shape, cfg).to(next(lm.parameters()).device)
    tok = tokenizer_of(processor)
    return ConnectorLM(lm, connector, token_id, tok.pad_token_id), ConnectorProcessor(processor, features)


def save_connector(model: ConnectorLM, folder: str | Path, meta: dict[str, Any]) -> None:
    """connector.safetensors (the connector's weights), connector.json (`meta`: the LM and encoders it belongs to,
    its settings and shapes), and lm_adapter/ when the LM carries LoRA."""
    from safetensors.torch import save_file

    from vlmtune.data.example import atomic_write_json

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.connector.state_dict().items()},
        str(out / WEIGHTS),
        metadata={"format": "pt"},
    )
    if hasattr(model.lm, "peft_config"):
        model.lm.save_pretrained(str(out / "lm_adapter"))
    atomic_write_json(
        out / META,
        {
            **meta,
            "shape": asdict(model.connector.shape),
            "config": asdict(model.connector.cfg),
            "placeholder": PLACEHOLDER,
            "placeholder_id": model.token_id,
        },
    )


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META
    if not path.exists():
        raise ConfigError(
            f"{folder}: no {META} there (expected a memory connector directory, e.g. runs/<name>/connector)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def check_fits(
    meta: dict[str, Any], *, lm_name: str, lm_hash: str | None, encoders: dict[str, Any], folder: str | Path
) -> None:
    """ConfigError unless the connector in `folder` was trained on this LM and with these encoders."""
    trained = meta.get("lm", {})
    if trained.get("hash") != lm_hash:
        raise ConfigError(
            f"the memory connector {folder} was trained on LM '{trained.get('name')}' (content hash "
            f"{trained.get('hash')}), not on '{lm_name}' (hash {lm_hash}): its soft tokens live in "
            f"that LM's embedding space. Fix: load it with --model {trained.get('name')} (model.name), "
            "or train a connector for this LM"
        )
    for part in ("image", "text"):
        was, now = meta.get("encoders", {}).get(part), encoders.get(part)
        if was != now:
            raise ConfigError(
                f"the memory connector {folder} was trained on {part} embeddings of {was}, but the "
                f"{part} encoder now is {now}. Fix: set connector.{part}_encoder to the encoder it "
                "was trained with (connector.json names it), or train a connector for this encoder"
            )


def load_connector(
    lm: Any, processor: Any, folder: str | Path, features: Any
) -> tuple[ConnectorLM, ConnectorProcessor]:
    """The saved connector on `lm` (checked by the caller with `check_fits`), ready to evaluate."""
    from safetensors.torch import load_file

    meta = read_meta(folder)
    cfg = ConnectorConfig(**meta["config"])
    if (Path(folder) / "lm_adapter").exists():
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, str(Path(folder) / "lm_adapter"))
    model, proc = build(lm, processor, features, cfg)
    if model.token_id != meta["placeholder_id"] or asdict(model.connector.shape) != meta["shape"]:
        raise ConfigError(
            f"the memory connector {folder} expects shapes {meta['shape']} and placeholder id "
            f"{meta['placeholder_id']}, this LM and these encoders give {asdict(model.connector.shape)} "
            f"and {model.token_id}. Fix: load it with the LM and encoders connector.json names"
        )
    model.connector.load_state_dict(load_file(str(Path(folder) / WEIGHTS)))
    model.eval()
    return model, proc
