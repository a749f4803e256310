"""Reminders: the retrieved items, chosen under a token budget and rendered into the current user turn.

    counter = TokenCounter(processor)
    rem = build_reminder(ranked, now=40, k=5, budget=320, max_images=2, counter=counter)
    ex2 = inject(example, rem, record={"method": "combined"})    # the chat template renders ex2 as usual

Choice: items are taken best first while they fit the budget (text tokens, plus the image's tokens when it is
re-attached), up to k; the best `max_images` image items get their picture re-attached (Mem-Gallery: simple
multimodal retrieval helps, stuffing every image into the context hurts), the others say "(image not
shown)". Rendering is chronological, each line with its turn and age:

    <reminder source="memory">
    [turn 12, 28 turns ago] Here is photo #417, Mina's drawing. <image>
    [turn 20, 20 turns ago; seen 3 times: turns 20, 25, 31] Here is photo #82, Leo's drawing. (image not shown)
    [turn 30, 10 turns ago] Leo's favourite colour is green. (replaced later)
    </reminder>
    What colour was the triangle in photo #417?

The block goes at the start of the current user turn, as text with `<image>` placeholders, so every model
family's own chat template places it (and its images) where that family puts user content. Models trained to
write a `<reminder>` themselves still have it stripped from their answers before scoring
(`vlmtune.metrics.text.strip_blocks`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vlmtune.data.example import IMAGE_TOKEN, Example
from vlmtune.memory.bank import Scored
from vlmtune.memory.items import MemoryItem

OPEN = '<reminder source="memory">'
CLOSE = "</reminder>"


class TokenCounter:
    """Tokens of text as the model's tokenizer counts them (words when there is no tokenizer), and the
    tokens one image costs in the model's input (measured once through its processor)."""

    def __init__(self, processor: Any = None, image_tokens: int | None = None):
        from vlmtune.processing import tokenizer_of

        self.processor = processor
        self.tok = tokenizer_of(processor) if processor is not None else None
        self._image_tokens = image_tokens
        self._cache: dict[str, int] = {}

    def text(self, s: str) -> int:
        n = self._cache.get(s)
        if n is None:
            n = len(self.tok(s, add_special_tokens=False)["input_ids"]) if self.tok is not None else len(s.split())
            if len(self._cache) < 200_000:
                self._cache[s] = n
        return n

    @property
    def image(self) -> int:
        if self._image_tokens is None:
            self._image_tokens = measure_image_tokens(self.processor)
        return self._image_tokens

    def line(self, item: MemoryItem, now: int, *, attach: bool) -> int:
        """Tokens of an item's reminder line (its head and body counted apart, so counts are reused across
        probes; within a token or two of counting the joined line), plus its image when attached."""
        head, _, body = item_line(item, now, attach=False).partition("] ")
        return self.text(head + "]") + self.text(body) + (self.image if attach else 0)

    def count(self, text: str) -> int:
        """Tokens of a text holding <image> placeholders: the words plus each image's tokens."""
        return self.text(text.replace(IMAGE_TOKEN, " ")) + text.count(IMAGE_TOKEN) * self.image


def measure_image_tokens(processor: Any) -> int:
    """How many input tokens one image adds, measured by encoding a prompt with and without one."""
    from PIL import Image

    from vlmtune.processing import encode_texts, has_image_processor, render

    if processor is None or not has_image_processor(processor):
        return 0
    msgs = [{"role": "user", "content": f"{IMAGE_TOKEN}\nx"}]
    with_img = encode_texts(
        processor,
        [render(processor, msgs, add_generation_prompt=True)],
        [[Image.new("RGB", (64, 64), (200, 200, 200))]],
    )
    plain = encode_texts(processor, [render(processor, [{"role": "user", "content": "x"}], add_generation_prompt=True)])
    return int(with_img["input_ids"].shape[1] - plain["input_ids"].shape[1])


@dataclass
class Reminder:
    text: str  # the block ("" when nothing was chosen)
    images: list[str]  # re-attached images, in placeholder order
    items: list[dict[str, Any]] = field(default_factory=list)  # what was injected, with score parts
    tokens: int = 0


def item_line(item: MemoryItem, now: int, *, attach: bool) -> str:
    age = now - item.turn
    head = f"[turn {item.turn}, {age} turn{'' if age == 1 else 's'} ago"
    if len(item.turns) > 1:
        head += f"; seen {len(item.turns)} times: turns {', '.join(str(t) for t in item.turns)}"
    line = f"{head}] {item.text}"
    if item.image:
        line += f" {IMAGE_TOKEN}" if attach else " (image not shown)"
    if item.superseded_by:
        line += " (replaced later)"
    return line


def build_reminder(
    ranked: Sequence[Scored],
    *,
    now: int,
    k: int,
    budget: int,
    max_images: int,
    counter: TokenCounter,
    all_images: bool = False,
) -> Reminder:
    """Choose (best first, under `budget` tokens, at most k) and render chronologically. `all_images` attaches
    every image (the full-context methods); otherwise the best `max_images` image items get theirs."""
    chosen: list[tuple[int, Scored, bool]] = []
    used = counter.text(OPEN) + counter.text(CLOSE) + 2
    images = 0
    for rank_i, s in enumerate(ranked):
        if len(chosen) >= k:
            break
        attach = bool(s.item.image) and (all_images or images < max_images)
        cost = counter.line(s.item, now, attach=attach) + 1
        if used + cost > budget:
            continue
        chosen.append((rank_i, s, attach))
        used += cost
        images += attach
    return render_reminder(chosen, now, used)


def render_reminder(chosen: Sequence[tuple[int, Scored, bool]], now: int, tokens: int) -> Reminder:
    if not chosen:
        return Reminder("", [], [], 0)
    ordered = sorted(chosen, key=lambda c: (c[1].item.turn, c[1].item.id))
    lines = [item_line(s.item, now, attach=attach) for _, s, attach in ordered]
    items = [
        {
            "id": s.item.id,
            "rank": r + 1,
            "turns": list(s.item.turns),
            "kind": s.item.kind,
            "text": s.item.text,
            "image": s.item.image if attach else None,
            "superseded": s.item.superseded_by is not None,
            "parts": s.parts,
        }
        for r, s, attach in ordered
    ]
    return Reminder(
        "\n".join([OPEN, *lines, CLOSE]), [s.item.image for _, s, a in ordered if a and s.item.image], items, tokens
    )


def inject(example: Example, reminder: Reminder, record: dict[str, Any]) -> Example:
    """The example with the reminder at the start of its last user turn and its images re-attached there.
    `record` (method, retrieval ranks...) is kept, with the injected items, in meta["memory"]."""
    msgs = [dict(m) for m in example.messages]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    before = sum(m["content"].count(IMAGE_TOKEN) for m in msgs[:last])
    if reminder.text:
        msgs[last]["content"] = f"{reminder.text}\n{msgs[last]['content']}"
    images = list(example.images[:before]) + list(reminder.images) + list(example.images[before:])
    meta = {**example.meta, "memory": {**record, "tokens": reminder.tokens, "items": reminder.items}}
    return dataclasses.replace(example, messages=msgs, images=images, meta=meta)
