"""Long-horizon multimodal memory: remember turns and images, retrieve by relevance, recency, frequency and
saliency, and remind the model in its prompt.

    kit = Toolkit.build("minilm", "vision_tower", caption=True, model=model, processor=processor, model_hash=h)
    bank = open_bank("runs/x/bank", kit, BankSettings())              # or MemoryBank(kit) in memory only
    bank.write(Write(turn=0, text="Here is photo #417, Mina's drawing.", kind="show", image="t000.png",
                     slot="photo #417"))
    ranked = bank.retrieve("What colour was the triangle in photo #417?", now=40)
    reminder = build_reminder(ranked, now=40, k=5, budget=320, max_images=2, counter=TokenCounter(processor))
    example = inject(example, reminder, {"method": "combined"})     # the chat template renders the rest

What it draws on (the anchors):
- Generative Agents (Park et al., 2023): the retrieval score is min-max scaled recency + relevance +
  importance, weighted; recency decays exponentially and retrieval refreshes an item.
- MemoryBank (Zhong et al., 2024): Ebbinghaus retention exp(-t/S), where recall raises the strength S. Its
  forgetting is random; here it is deterministic.
- MA-LMM (He et al., 2024): a bounded memory bank that merges the most similar adjacent items when full.
- LongMemEval (Wu et al., 2024): five abilities (extraction, multi-session, knowledge update, temporal,
  abstention), turn-level evidence labels (so retrieval recall is measurable), and key expansion (captions
  as extra keys).
- LoCoMo (Maharana et al., 2024): long conversations that share images (`vlmtune.memory.sources`).
- Mem-Gallery: simple multimodal retrieval beats complex memory systems, and stuffing every image into
  the context hurts (hence a token budget and at most a few re-attached images).

Layers: everything here sits above `vlmtune.models` / `vlmtune.infer` (it pools the VLM's vision tower and
generates captions) and below `vlmtune.eval`, except `vlmtune.memory.experiment`, which runs evaluations.
The trainable memory connector (`vlmtune.memory.connector`, with its model in `vlmtune.models.connector`) builds on
`encoders` (the `Encoder` interface and its `identity`) and `cache` (`EmbeddingCache`: pre-extracted vectors by
content hash, `vlmtune memory embed --connector`).
"""

from vlmtune.memory.bank import BankSettings, MemoryBank, Scored, Write
from vlmtune.memory.reminder import Reminder, TokenCounter, build_reminder, inject
from vlmtune.memory.scoring import ScoreSettings
from vlmtune.memory.store import open_bank
from vlmtune.memory.toolkit import Toolkit

__all__ = [
    "BankSettings",
    "MemoryBank",
    "Reminder",
    "ScoreSettings",
    "Scored",
    "TokenCounter",
    "Toolkit",
    "Write",
    "build_reminder",
    "inject",
    "open_bank",
]
