"""Memory for a chat: every question and answer is remembered; a new question is reminded of earlier
conversations.

    memory = ChatMemory()                              # BM25 over the turns' text: no model, nothing to download
    reminder = memory.recall("What is my cat called?")
    question = with_reminder(reminder, "What is my cat called?")   # what the model is asked
    memory.remember("What is my cat called?", answer)
    memory.new_conversation()                          # the turns so far become "earlier conversations"

Only turns of earlier conversations are recalled: the current conversation is in the model's context already.
An item is a candidate only when it shares a content word with the question (scikit-learn's English stop words
left out, plurals folded), so a question about something new gets no reminder rather than the most recent
turns. (BM25 alone cannot tell: with a handful of turns, a word in half of them has an inverse document
frequency of zero.) Recalled items are refreshed
(`MemoryBank.touch`), as in a run. The memory lives as long as the object (a UI session); `open_bank` is the
way to keep one on disk.
"""

from __future__ import annotations

import re
from typing import Any

from vlmtune.memory.bank import MemoryBank, Write
from vlmtune.memory.index import tokenize
from vlmtune.memory.reminder import Reminder, TokenCounter, build_reminder
from vlmtune.memory.toolkit import Toolkit


class ChatMemory:
    """A memory bank fed by a chat, one turn per question and one per answer."""

    def __init__(self, kit: Toolkit | None = None, *, k: int = 3, budget: int = 160, processor: Any = None):
        self.bank = MemoryBank(kit or Toolkit.build("bm25", "none", caption=False))
        self.counter = TokenCounter(processor)
        self.k, self.budget = k, budget
        self.turn = 0  # the next turn's number
        self.conversation_start = 0  # the first turn of the current conversation

    def new_conversation(self) -> None:
        self.conversation_start = self.turn

    def recall(self, question: str) -> Reminder:
        """The reminder for `question`: the best earlier-conversation items that share a word with it, at most k,
        under the token budget, chronological. Images are named, not re-attached."""
        asked = content_words(question)
        ranked = [
            s
            for s in self.bank.retrieve(question, now=self.turn)
            if s.item.turn < self.conversation_start and asked & content_words(s.item.text.partition(": ")[2])
        ]
        reminder = build_reminder(
            ranked, now=self.turn, k=self.k, budget=self.budget, max_images=0, counter=self.counter
        )
        self.bank.touch([it["id"] for it in reminder.items], self.turn)
        return reminder

    def remember(self, question: str, answer: str, image: str | None = None) -> None:
        """Write the asked question (with its image, if any) and the answer as two turns."""
        self.bank.write(Write(turn=self.turn, text=f"User: {question}", image=image))
        self.bank.write(Write(turn=self.turn + 1, text=f"Assistant: {answer}"))
        self.turn += 2

    def rows(self, reminder: Reminder) -> list[list[Any]]:
        """[turn, age, text, score, relevance, recency, frequency, saliency] per recalled item (ages as of now: call
        it before `remember`), numbers to 3 decimals as text; the parts as scaled over the remembered turns (the score is their weighted sum, less
        any superseded penalty)."""
        out = []
        for it in reminder.items:
            p = it["parts"]
            scaled = p.get("scaled", {})
            out.append(
                [
                    it["turns"][0],
                    self.turn - it["turns"][0],
                    it["text"],
                    f"{p.get('score', 0.0):.3f}",
                    *(f"{scaled.get(k, 0.0):.3f}" for k in ("relevance", "recency", "frequency", "saliency")),
                ]
            )
        return out


def content_words(text: str) -> set[str]:
    """The words of `text` that carry content: lower-cased, English stop words left out, a plural "s" folded."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return {tokenize(w)[0] for w in re.findall(r"\w+", text.lower()) if w not in ENGLISH_STOP_WORDS}


def with_reminder(reminder: Reminder, question: str) -> str:
    """The question as the model is asked it: the reminder block first (as in a run's prompts), when there is one."""
    return f"{reminder.text}\n{question}" if reminder.text else question
