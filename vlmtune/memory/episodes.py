"""Episodes through memory banks: every probe gets the reminder a method retrieves for it.

    episodes = read_episodes("data/shapes-memory/episodes.jsonl")
    runner = Runner(kit, counter, RunnerSettings.from_config(cfg.memory, window=448))
    out = runner.run(episodes, probes, ["combined", "oracle"])     # {method: [Outcome per probe]}
    examples = [inject(ex, o.reminder, o.record) for ex, o in zip(probes, out["combined"])]

An episode file holds one episode per line: {"id", "turns": [{"turn", "kind", "text", "image" (relative to the
file, or null), "slot" (optional), "saliency" (optional), "meta"}]}. A probe is any Example whose meta names its
`episode`, the `turn` it is asked at (it sees turns 0..turn-1) and, for retrieval metrics, its `evidence`
turns. The shapes-memory generator, the VisDial-chain builder and the LoCoMo reader all write this format.

Methods, each answering the probes of an episode in turn order while the episode's turns are written:
- none: no reminder;
- truncated: the whole history as reminder lines (every image attached), cut from the oldest end to the
  window; full: the same, only for probes whose whole history fits (the ceiling where it fits);
- recency, relevance, combined: a bank per method, ranked by that score (`vlmtune.memory.scoring`); the
  items a reminder uses are recalled (refreshed and strengthened);
- capped: the combined score on a bank of `capped_capacity` items (MA-LMM-style merging);
- oracle: the evidence items alone (from the combined bank, so they render the same way);
- removed: the combined reminder with every evidence item taken out (training examples that should abstain).
Each outcome records the evidence's rank (the position at which the ranking covers every evidence turn),
whether the evidence was injected, the reminder's tokens and the history's tokens.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vlmtune.data.example import Example
from vlmtune.errors import ConfigError, DataError
from vlmtune.jsonlines import read_json_lines
from vlmtune.memory.bank import BankSettings, MemoryBank, Scored, Write
from vlmtune.memory.items import TURN_KINDS, MemoryItem
from vlmtune.memory.reminder import Reminder, TokenCounter, build_reminder
from vlmtune.memory.scoring import ScoreSettings, method_settings
from vlmtune.memory.toolkit import Toolkit

log = logging.getLogger(__name__)

BANK_METHODS = ("recency", "relevance", "combined", "capped")
METHODS = ("none", "truncated", "full", *BANK_METHODS, "oracle", "removed")


@dataclass
class EpisodeTurn:
    turn: int
    kind: str
    text: str
    image: str | None = None
    slot: str | None = None
    saliency: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Episode:
    id: str
    turns: list[EpisodeTurn]


EPISODE_LINE = '{"id", "turns": [{"turn", "kind", "text", "image"}]}'


def read_episodes(path: str | Path) -> dict[str, Episode]:
    """Episodes by id; images resolved relative to the file; a bad line is a DataError naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            "episodes file not found",
            file=str(path),
            fix="set memory.episodes to the episodes.jsonl written with your probes",
        )
    out: dict[str, Episode] = {}
    for line in read_json_lines(path, what="an episodes file", fix=f"each line is one episode: {EPISODE_LINE}"):
        try:
            episode = _episode(line.value, path, line.number)
        except (KeyError, TypeError, AttributeError) as e:
            raise DataError(
                f"missing or malformed field {e}", file=str(path), line=line.number, fix=f"each line is {EPISODE_LINE}"
            ) from None
        out[episode.id] = episode
    return out


def _episode(row: dict[str, Any], path: Path, lineno: int) -> Episode:
    turns = []
    for i, t in enumerate(row["turns"]):
        if t["turn"] != i:
            raise DataError(
                f"turn {i} is numbered {t['turn']}",
                file=str(path),
                line=lineno,
                field="turns",
                fix="number the turns 0, 1, 2, ... in order",
            )
        if t.get("kind", "text") not in TURN_KINDS:
            raise DataError(
                f"turn {i} has kind {t.get('kind')!r}",
                file=str(path),
                line=lineno,
                field=f"turns[{i}].kind",
                fix=f"use one of {', '.join(TURN_KINDS)}",
            )
        image = t.get("image")
        if image:
            image = str(path.parent / image) if not Path(image).is_absolute() else image
            if not Path(image).exists():
                raise DataError(
                    f"image not found: {image}",
                    file=str(path),
                    line=lineno,
                    field=f"turns[{i}].image",
                    fix="images resolve relative to the episodes file",
                )
        turns.append(
            EpisodeTurn(
                i, t.get("kind", "text"), str(t["text"]), image, t.get("slot"), t.get("saliency"), t.get("meta") or {}
            )
        )
    return Episode(str(row["id"]), turns)


@dataclass(frozen=True)
class RunnerSettings:
    bank: BankSettings = field(default_factory=BankSettings)
    k: int = 5
    budget: int = 320
    max_images: int = 2
    window: int = 448
    capped_capacity: int = 64

    @classmethod
    def from_config(cls, m: Any, *, window: int) -> RunnerSettings:
        score = ScoreSettings(
            weights=dict(m.weights),
            hybrid=m.hybrid,
            decay=m.decay,
            growth=m.growth,
            superseded_penalty=m.superseded_penalty,
        )
        bank = BankSettings(score=score, capacity=m.capacity, policy=m.policy, index=m.index)
        return cls(bank, m.k, m.token_budget, m.max_images, m.window or window, m.capped_capacity)


@dataclass
class Outcome:
    reminder: Reminder
    record: dict[str, Any]


@dataclass
class Timings:
    write_ms: list[float] = field(default_factory=list)
    retrieve_ms: list[float] = field(default_factory=list)
    bank_bytes: list[tuple[int, int]] = field(default_factory=list)  # (bytes, turns) per episode


def covering(ranked: Sequence[MemoryItem], evidence: Sequence[int]) -> int | None:
    """1-based position at which the items so far cover every evidence turn; None if they never do."""
    need = set(evidence)
    if not need:
        return None
    for pos, item in enumerate(ranked, start=1):
        need -= set(item.turns)
        if not need:
            return pos
    return None


class Runner:
    def __init__(self, kit: Toolkit, counter: TokenCounter, settings: RunnerSettings | None = None):
        self.kit, self.counter = kit, counter
        self.s = settings or RunnerSettings()
        self.timings = Timings()

    def _bank(self, method: str, store_dir: Path | None) -> MemoryBank:
        bank_s = self.s.bank
        if method == "capped":
            bank_s = replace(bank_s, capacity=self.s.capped_capacity)
        if store_dir is not None and method == "combined":
            from vlmtune.memory.store import open_bank

            return open_bank(store_dir, self.kit, bank_s)
        return MemoryBank(self.kit, bank_s)

    def run(
        self,
        episodes: dict[str, Episode],
        probes: Sequence[Example],
        methods: Sequence[str],
        *,
        measure: bool = False,
        store_root: Path | None = None,
    ) -> dict[str, list[Outcome]]:
        """Outcomes per method, one per probe (in the order of `probes`). `measure`: time every turn's write and
        a retrieval per turn (the turn's text as the query, no recall) on the combined bank; `store_root`: keep
        the combined banks on disk there (their size per turn is recorded)."""
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"unknown memory method(s) {unknown}; choose from {', '.join(METHODS)}")
        by_ep: dict[str, list[int]] = defaultdict(list)
        for i, ex in enumerate(probes):
            ep = ex.meta.get("episode")
            if ep not in episodes:
                raise DataError(
                    f"probe '{ex.id}' names episode {ep!r}, which the episodes file does not hold",
                    field="meta.episode",
                    fix="give memory.episodes the file written with these probes",
                )
            by_ep[ep].append(i)
        out: dict[str, list[Outcome | None]] = {m: [None] * len(probes) for m in methods}
        from vlmtune.logs import progress_bar

        for ep_id in progress_bar(sorted(by_ep), desc="memory: episodes"):
            idx = sorted(by_ep[ep_id], key=lambda i: (probes[i].meta["turn"], probes[i].id))
            store = store_root / ep_id if store_root is not None else None
            for m, results in self._episode(episodes[ep_id], [probes[i] for i in idx], methods, measure, store).items():
                for i, r in zip(idx, results):
                    out[m][i] = r
        self.kit.flush()
        done = {m: [r for r in results if r is not None] for m, results in out.items()}
        assert all(len(results) == len(probes) for results in done.values())  # each probe is in one episode
        return done

    def _episode(
        self, ep: Episode, probes: list[Example], methods: Sequence[str], measure: bool, store: Path | None
    ) -> dict[str, list[Outcome]]:
        need_banks = {m for m in methods if m in BANK_METHODS} | (
            {"combined"} if {"oracle", "removed"} & set(methods) else set()
        )
        banks = {m: self._bank(m, store) for m in sorted(need_banks)}
        results: dict[str, list[Outcome]] = {m: [] for m in methods}
        history: list[MemoryItem] = []
        pi = 0
        for t in range(len(ep.turns) + 1):
            while pi < len(probes) and probes[pi].meta["turn"] <= t:
                for m, o in self._answer(probes[pi], t, methods, banks, history).items():
                    results[m].append(o)
                pi += 1
            if t == len(ep.turns):
                break
            turn = ep.turns[t]
            w = Write(turn=t, text=turn.text, kind=turn.kind, image=turn.image, slot=turn.slot, saliency=turn.saliency)
            for m, bank in banks.items():
                if measure and m == "combined":
                    t0 = time.perf_counter()
                    bank.retrieve(turn.text, now=t)
                    t1 = time.perf_counter()
                    bank.write(w)
                    self.timings.retrieve_ms.append((t1 - t0) * 1000)
                    self.timings.write_ms.append((time.perf_counter() - t1) * 1000)
                else:
                    bank.write(w)
            history.append(
                MemoryItem(
                    id=f"h{t:06d}",
                    kind=TURN_KINDS.get(turn.kind, "turn"),
                    text=turn.text,
                    turn=t,
                    turns=[t],
                    content="",
                    image=turn.image,
                )
            )
        if len(results) and pi < len(probes):
            raise DataError(
                f"probe '{probes[pi].id}' is asked at turn {probes[pi].meta['turn']}, after the episode "
                f"'{ep.id}' ends ({len(ep.turns)} turns)",
                field="meta.turn",
            )
        for bank in banks.values():
            bank.close()
        if store is not None and "combined" in banks and banks["combined"].store is not None:
            self.timings.bank_bytes.append((banks["combined"].store.size_bytes(), len(ep.turns)))
        return results

    def _answer(
        self, ex: Example, now: int, methods: Sequence[str], banks: dict[str, MemoryBank], history: list[MemoryItem]
    ) -> dict[str, Outcome]:
        query = ex.prompt_messages()[-1]["content"]
        evidence = list(ex.meta.get("evidence") or [])
        hist_tokens = sum(self.counter.line(h, now, attach=bool(h.image)) for h in history)
        base = {"evidence": evidence, "history_tokens": hist_tokens, "history_turns": len(history)}
        ranked: dict[str, list[Scored]] = {}
        out: dict[str, Outcome] = {}
        for m in banks:  # every ranking first, before any recall changes a bank
            ranked[m] = banks[m].retrieve(
                query, now, settings=method_settings("combined" if m == "capped" else m, self.s.bank.score)
            )
        for m in methods:
            rec = {"method": m, **base}
            if m == "none":
                rem = Reminder("", [])
            elif m in ("truncated", "full"):
                newest = [Scored(h, 0.0, {}) for h in reversed(history)]
                rem = build_reminder(
                    newest,
                    now=now,
                    k=len(newest) or 1,
                    budget=self.s.window,
                    max_images=0,
                    counter=self.counter,
                    all_images=True,
                )
                kept = {it["id"] for it in rem.items}
                rec["fits"] = len(kept) == len(history)
                rec["evidence_injected"] = bool(evidence) and all(f"h{e:06d}" in kept for e in evidence)
            elif m == "oracle":
                items = [s for s in ranked["combined"] if evidence and set(s.item.turns) & set(evidence)]
                rem = build_reminder(
                    items, now=now, k=self.s.k, budget=self.s.budget, max_images=self.s.max_images, counter=self.counter
                )
                rec["evidence_injected"] = bool(evidence)
            elif m == "removed":
                rest = [s for s in ranked["combined"] if not (set(s.item.turns) & set(evidence))]
                rem = build_reminder(
                    rest, now=now, k=self.s.k, budget=self.s.budget, max_images=self.s.max_images, counter=self.counter
                )
                rec["evidence_injected"] = False
            else:
                rem = build_reminder(
                    ranked[m],
                    now=now,
                    k=self.s.k,
                    budget=self.s.budget,
                    max_images=self.s.max_images,
                    counter=self.counter,
                )
                rec["evidence_rank"] = covering([s.item for s in ranked[m]], evidence)
                used = {it["id"] for it in rem.items}
                rec["evidence_injected"] = (
                    covering([s.item for s in ranked[m] if s.item.id in used], evidence) is not None
                )
                rec["candidates"] = len(ranked[m])
                banks[m].touch([it["id"] for it in rem.items], now)
            out[m] = Outcome(rem, rec)
        return out
