"""Real data for the memory, in the episodes format: VisDial dialogues chained, and LoCoMo conversations.

    build_visdial_chain("visdial_1.0_val.json", "data/visdial-chain", image_dirs=["VisualDialog_val2018"], chain=5)
    convert_locomo("locomo10.json", "data/locomo")
    # each writes OUT/episodes.jsonl and OUT/data.jsonl (probes); then, in a recipe:
    #   data: {source: files, path: OUT/data.jsonl, task: dialog | memory}  memory: {enabled: true}

VisDial chain: `chain` consecutive dialogues form one episode. Each dialogue is shown as a photo turn ("Here
is photo #k. Caption: ...", with the image) followed by its rounds ("Q: ... A: ...") except one held-out round
(seeded); after the last dialogue, each held-out round is asked about its photo ("About photo #k: is it
sunny?"), a `dialog` example ranked over that round's own 100 options (R@k, MRR, NDCG with dense
annotations). The probe's input holds no rounds as turns (its earlier rounds live in the memory), so its
target round is 1 for the dialog task's leak check; the VisDial round is meta.round_id. The evidence is the
photo turn and the dialogue's other rounds; the distance runs to the photo turn.

LoCoMo (Maharana et al., 2024; `locomo10.json`): a list of {"sample_id", "conversation": {"speaker_a",
"speaker_b", "session_N_date_time", "session_N": [{"speaker", "dia_id", "text", "img_url"?, "blip_caption"?}]},
"qa": [{"question", "answer" | "adversarial_answer", "evidence": [dia_id], "category"}]}. Each session opens
with a date turn; each utterance is a turn ("Caroline: ..."), a shared photo is described by its caption, and
attached when `image_dir` holds a file named like the end of its URL. Each QA is a `memory` probe asked after
the whole conversation; category 5 (adversarial: not in the conversation) becomes an abstention probe whose
answer is "unknown". Categories: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 abstention.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmtune.data.example import Example, atomic_write_text, write_jsonl
from vlmtune.data.synth.memory import UNKNOWN, bucket_of
from vlmtune.errors import DataError


def _write(out: Path, episodes: list[dict[str, Any]], probes: list[Example]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "episodes.jsonl", "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in episodes))
    return write_jsonl(out / "data.jsonl", probes)


def _rel(path: str | None, out: Path) -> str | None:
    return None if path is None else os.path.relpath(Path(path).resolve(), out.resolve())


def build_visdial_chain(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    image_dirs: Sequence[str] | str | None,
    chain: int = 5,
    seed: int = 0,
    dense: str | None = None,
    limit: int = 0,
) -> Path:
    """Chain VisDial dialogues into episodes (module docstring). Returns OUT/data.jsonl."""
    from vlmtune.data.formats.visdial import read_visdial

    if chain < 2:
        raise DataError(f"a chain needs at least 2 dialogues, got {chain}", field="chain")
    out = Path(out_dir)
    dialogs: dict[Any, list[Example]] = defaultdict(list)
    for ex in read_visdial(path, image_dirs=image_dirs, dense=dense, rounds="all"):
        dialogs[ex.meta["image_id"]].append(ex)
        if limit and len(dialogs) > limit:
            dialogs.pop(ex.meta["image_id"])
            break
    ids = list(dialogs)
    rng = random.Random(f"visdial-chain-{seed}")
    episodes, probes = [], []
    for e, start in enumerate(range(0, len(ids) - chain + 1, chain)):
        ep = f"visdial-chain-{e:05d}"
        turns: list[dict[str, Any]] = []
        held: list[tuple[Example, int, int]] = []
        for k, image_id in enumerate(ids[start : start + chain], start=1):
            rounds = sorted(dialogs[image_id], key=lambda x: x.meta["round_id"])
            photo = len(turns)
            turns.append(
                {
                    "turn": photo,
                    "kind": "show",
                    "text": f"Here is photo #{k}. Caption: {rounds[0].meta['caption']}",
                    "image": _rel(rounds[0].images[0], out),
                    "slot": f"photo #{k}",
                    "meta": {"image_id": image_id},
                }
            )
            out_round = rng.randrange(len(rounds))
            for j, r in enumerate(rounds):
                if j == out_round:
                    held.append((r, photo, k))
                    continue
                turns.append(
                    {
                        "turn": len(turns),
                        "kind": "text",
                        "text": f"About photo #{k}: Q: {r.meta['question']} A: {r.target['answer']}",
                        "image": None,
                        "slot": None,
                        "meta": {"image_id": image_id, "round_id": r.meta["round_id"]},
                    }
                )
        end = len(turns)
        for r, photo, k in held:
            question = f"About photo #{k}: {r.meta['question']}"
            evidence = [photo] + [
                t["turn"] for t in turns if t["meta"].get("image_id") == r.meta["image_id"] and t["turn"] != photo
            ]
            probes.append(
                Example(
                    id=f"{ep}-p{k}",
                    task="dialog",
                    options=list(r.options or []),
                    group=ep,
                    messages=[
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": r.target["answer"]},
                    ],
                    target={**r.target, "round": 1},
                    meta={
                        "episode": ep,
                        "turn": end,
                        "evidence": evidence,
                        "kind": "visdial",
                        "distance": end - photo,
                        "bucket": bucket_of(end - photo),
                        "question": question,
                        "image_id": r.meta["image_id"],
                        "round_id": r.meta["round_id"],
                        "source": "visdial-chain",
                    },
                )
            )
        episodes.append({"id": ep, "length": end, "turns": turns})
    if not episodes:
        raise DataError(
            f"{path}: fewer than chain={chain} dialogues were read", fix="lower --chain or give more dialogues"
        )
    return _write(out, episodes, probes)


LOCOMO_KINDS = {1: "multi_hop", 2: "temporal", 3: "open_domain", 4: "single_hop", 5: "abstention"}


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("file not found", file=str(path), fix="give the LoCoMo file (locomo10.json)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg})", file=str(path), line=e.lineno) from None


def convert_locomo(path: str | os.PathLike, out_dir: str | os.PathLike, *, image_dir: str | None = None) -> Path:
    """LoCoMo conversations -> episodes and memory probes (module docstring). Returns OUT/data.jsonl."""
    path, out = Path(path), Path(out_dir)
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError("expected a list of conversations", file=str(path), fix="give locomo10.json as released")
    episodes, probes = [], []
    for n, sample in enumerate(data):
        where = f"record {n}"
        try:
            ep, conv = str(sample["sample_id"]), sample["conversation"]
            sessions = sorted(int(m.group(1)) for k in conv if (m := re.fullmatch(r"session_(\d+)", k)))
        except (KeyError, TypeError) as e:
            raise DataError(
                f"{where}: missing {e}",
                file=str(path),
                field=str(e),
                fix='each record needs "sample_id" and "conversation" with session_N lists',
            ) from None
        turns: list[dict[str, Any]] = []
        by_dia: dict[str, int] = {}
        for s in sessions:
            date = conv.get(f"session_{s}_date_time")
            if date:
                turns.append({"turn": len(turns), "kind": "text", "text": f"(session {s}, {date})", "image": None})
            for u in conv[f"session_{s}"]:
                text = f"{u['speaker']}: {u['text']}"
                image = None
                if u.get("img_url"):
                    text += f" [shares a photo: {u.get('blip_caption', 'a photo')}]"
                    url = u["img_url"][0] if isinstance(u["img_url"], list) else u["img_url"]
                    local = Path(image_dir) / Path(str(url)).name if image_dir else None
                    image = _rel(str(local), out) if local is not None and local.exists() else None
                by_dia[u["dia_id"]] = len(turns)
                turns.append({"turn": len(turns), "kind": "show" if image else "text", "text": text, "image": image})
        end = len(turns)
        for q, qa in enumerate(sample.get("qa", [])):
            kind = LOCOMO_KINDS.get(qa.get("category"), "open_domain")
            answer = UNKNOWN if kind == "abstention" else str(qa.get("answer", ""))
            if not answer:
                raise DataError(f"{where}: qa {q} has no answer", file=str(path), field=f"qa[{q}].answer")
            evidence = sorted({by_dia[d] for d in _dia_ids(qa.get("evidence", [])) if d in by_dia})
            distance = end - evidence[0] if evidence and kind != "abstention" else None
            probes.append(
                Example(
                    id=f"locomo-{ep}-q{q:03d}",
                    task="memory",
                    group=ep,
                    target=answer,
                    options=None,
                    messages=[{"role": "user", "content": qa["question"]}, {"role": "assistant", "content": answer}],
                    meta={
                        "episode": ep,
                        "turn": end,
                        "evidence": [] if kind == "abstention" else evidence,
                        "kind": kind,
                        "distance": distance,
                        "bucket": bucket_of(distance),
                        "source": "locomo",
                    },
                )
            )
        episodes.append({"id": ep, "length": end, "turns": turns})
    return _write(out, episodes, probes)


def _dia_ids(evidence: Any) -> list[str]:
    """LoCoMo evidence ids ("D1:3"; a few records join several in one string: "D8:6; D9:17")."""
    out: list[str] = []
    for e in evidence if isinstance(evidence, list) else [evidence]:
        out += re.findall(r"D\d+:\d+", str(e))
    return out
