"""Seeded, grouped, stratified train/val/test splits.

    splits = split_examples(examples, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    check_no_leakage(splits)              # DataError if a group (or an augmented copy) crosses splits
    small, how = sample_examples(examples, 16, seed=0)   # what data.sample / --smoke keep
    log.info("split counts: %s", split_counts(splits))

The unit of splitting is a *group*, never an example: examples sharing `Example.group` (or, with
`by="id"`, only the example itself) move together, and an augmented copy (`meta.augmented_from`) is
always glued to its source, so near-duplicates cannot leak from train into evaluation.

Counts are exact: the number of groups per split is the largest-remainder rounding of
`fraction * n_groups`, and when stratifying each label's groups are rounded the same way, with the
per-label roundings reconciled so the per-split totals still come out exact. So 72.25/12.75/15 of 400
groups is exactly 289/51/60.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

from vlmtune.data.example import Example
from vlmtune.errors import ConfigError, DataError

BY_CHOICES = ("group", "id")
# Labels stand for "no closed label set" (one stratum) and "no target" in split_counts.
_ALL = ""
_NO_TARGET = "<none>"
_FRACTION_TOL = 1e-6


def split_examples(
    examples: Iterable[Example], fractions: Mapping[str, float], seed: int, stratify: bool = True, by: str = "group"
) -> dict[str, list[Example]]:
    """Split examples into named parts with exact, seeded, group-preserving counts.

    fractions: split name -> fraction of groups, e.g. {"train": 0.8, "val": 0.1, "test": 0.1}; must sum
        to 1. A split with fraction 0 is returned empty; a positive fraction that would round to zero
        groups is an error (an empty eval set would report nothing).
    seed: the same examples + seed always give the same split; reordering the input does not change it
        (as long as each group's first example, which sets its stratum, stays first).
    stratify: keep each label's share equal across splits, when the targets form a closed label set
        (every target a str/int/bool and labels repeat); otherwise the split is plain random.
    by: "group" (examples sharing `group` move together; the default) or "id" (each example alone).
        Either way, augmented copies follow their source.
    Returns split name -> examples, in input order within each split, splits in `fractions` order.
    """
    fracs = _check_fractions(fractions)
    if by not in BY_CHOICES:
        raise ConfigError(f"split by='{by}' is not supported; use one of {', '.join(BY_CHOICES)}")
    examples = list(examples)
    if not examples:
        raise DataError("no examples to split", fix="check that the dataset file is not empty")
    _check_unique_ids(examples)

    units = _units(examples, by)  # unit key -> example indices (input order)
    # Sort keys so the result depends on the seed and the data, not on the order the file lists them.
    keys = sorted(units)
    rng = random.Random(seed)
    rng.shuffle(keys)

    strata: dict[str, list[str]] = defaultdict(list)  # label -> unit keys, in shuffled order
    closed = stratify and _is_closed_set([examples[units[k][0]] for k in keys])
    for k in keys:
        strata[_label(examples[units[k][0]]) if closed else _ALL].append(k)

    totals = _largest_remainder(len(keys), fracs)
    names = list(fracs)
    empty = [n for n in names if fracs[n] > 0 and totals[n] == 0]
    if empty:
        raise ConfigError(
            f"split(s) {empty} would be empty: {len(keys)} group(s) are too few for fractions "
            f"{dict(fracs)}. Fix: add data, raise those fractions, or set them to 0"
        )

    # Tie-breaks in the reconciliation are seeded too, so equal remainders don't always favour one label.
    cells = _allocate(strata, fracs, totals, rng)
    assignment: dict[str, str] = {}
    for label, ks in strata.items():
        start = 0
        for name in names:
            n = cells[label][name]
            for k in ks[start : start + n]:
                assignment[k] = name
            start += n

    out: dict[str, list[Example]] = {n: [] for n in names}
    unit_of = {i: k for k, idx in units.items() for i in idx}
    for i, ex in enumerate(examples):
        out[assignment[unit_of[i]]].append(ex)
    return out


def sample_examples(examples: list[Example], n: int, seed: int) -> tuple[list[Example], str]:
    """A seeded sample of n examples, in their original order, and a line saying how it was drawn.

    Labels and units are split_examples' own (a unit: a group, with any augmented copy glued to its source).
    Per label, the count is proportional (largest remainder), and at least one when n allows. Records are
    taken one unit after another (a seeded order), a seeded member of each before a second member of any,
    so a small sample spans as many groups as it can and a later split still has groups to deal out (16
    records of whole 10-round VisDial dialogues would be two groups). Dropping records never joins two
    groups, so the split's no-leakage guarantee holds for what is kept."""
    rng = random.Random(seed)
    units = _units(examples, "group")
    keys = sorted(units)  # sorted, then shuffled: the sample depends on the seed and the data only
    rng.shuffle(keys)
    closed = _is_closed_set(examples)
    label = [_label(ex) if closed else "" for ex in examples]
    size = Counter(label)
    want = _largest_remainder(n, {lab: k / len(examples) for lab, k in sorted(size.items())})
    if n >= len(size):
        want = {lab: max(1, k) for lab, k in want.items()}
        while sum(want.values()) > n:
            want[max(want, key=lambda lab: (want[lab], lab))] -= 1
    order = []  # (pass, unit rank, index): every unit's first pick, then every unit's second pick, ...
    for rank, k in enumerate(keys):
        members = list(units[k])
        rng.shuffle(members)
        order += [(p, rank, i) for p, i in enumerate(members)]
    kept: list[int] = []
    for _, _, i in sorted(order):
        if want[label[i]] > 0:
            want[label[i]] -= 1
            kept.append(i)
    sample = [examples[i] for i in sorted(kept)]
    how = f"stratified over {len(size)} labels" if closed else "not stratified: no closed label set"
    return sample, f"{how}, {len(_units(sample, 'group'))} group(s)"


def check_no_leakage(splits: Mapping[str, Iterable[Example]], by: str = "group") -> None:
    """Raise DataError if an id, a group, or an augmented copy's source appears in two splits.

    by: as in split_examples; with "id" a group may span splits (the caller chose that), ids may not.
    """
    if by not in BY_CHOICES:
        raise ConfigError(f"check_no_leakage by='{by}' is not supported; use one of {', '.join(BY_CHOICES)}")
    where_id: dict[str, str] = {}
    where_group: dict[str, str] = {}
    pending: list[tuple[str, str, str]] = []  # (copy id, source id, split of the copy)
    for name, exs in splits.items():
        for ex in exs:
            checks = [(where_id, ex.id, "id")]
            if by == "group":
                checks.append((where_group, _group_key(ex), "group"))
            for seen, key, what in checks:
                if seen.setdefault(key, name) != name:
                    raise DataError(
                        f"{what} '{key}' is in both '{seen[key]}' and '{name}'",
                        field=what,
                        fix="split with vlmtune.data.splits.split_examples, which keeps each group in one split",
                    )
            src = (ex.meta or {}).get("augmented_from")
            if src is not None:
                pending.append((ex.id, str(src), name))
    for copy_id, src, name in pending:
        if src in where_id and where_id[src] != name:
            raise DataError(
                f"'{copy_id}' (in '{name}') is an augmented copy of '{src}' (in '{where_id[src]}')",
                field="meta.augmented_from",
                fix="augment after splitting, or give copies their source's group",
            )


def split_counts(splits: Mapping[str, Iterable[Example]], max_labels: int = 20) -> dict[str, dict[str, int]]:
    """Per-split, per-label example counts (label = str(target)), plus a 'total' per split, for logs.

    Only the `max_labels` most frequent labels overall are listed; the rest are summed under '<other>'
    so that open-ended targets (every answer different) don't flood the log.
    """
    per = {name: Counter(_label(ex) for ex in exs) for name, exs in splits.items()}
    overall: Counter[str] = sum(per.values(), Counter())
    keep = sorted(lab for lab, _ in sorted(overall.items(), key=lambda kv: (-kv[1], kv[0]))[:max_labels])
    out: dict[str, dict[str, int]] = {}
    for name, c in per.items():
        row = {lab: c.get(lab, 0) for lab in keep}
        if len(overall) > len(keep):
            row["<other>"] = sum(c.values()) - sum(row.values())
        row["total"] = sum(c.values())
        out[name] = row
    return out


# --- helpers ---------------------------------------------------------------------------------------


def _check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    if not fractions:
        raise ConfigError("split fractions are empty; give e.g. {train: 0.8, val: 0.1, test: 0.1}")
    fracs: dict[str, float] = {}
    for name, f in fractions.items():
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f < 0:
            raise ConfigError(f"split fraction '{name}' must be a number in [0, 1], got {f!r}")
        fracs[str(name)] = float(f)
    total = sum(fracs.values())
    if abs(total - 1.0) > _FRACTION_TOL:
        raise ConfigError(
            f"split fractions must sum to 1, got {total:g} ({fracs}); e.g. {{train: 0.8, val: 0.1, test: 0.1}}"
        )
    return fracs


def _check_unique_ids(examples: list[Example]) -> None:
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            raise DataError(
                f"duplicate id '{ex.id}'", field="id", fix="ids must be unique across the examples being split"
            )
        seen.add(ex.id)


def _group_key(ex: Example) -> str:
    return ex.group if ex.group is not None else ex.id


def _units(examples: list[Example], by: str) -> dict[str, list[int]]:
    """Union-find over examples: same group (when by='group') or augmented_from links join a unit."""
    parent = list(range(len(examples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)  # keep the earliest example as root

    by_id = {ex.id: i for i, ex in enumerate(examples)}
    first_of_group: dict[str, int] = {}
    for i, ex in enumerate(examples):
        if by == "group":
            union(i, first_of_group.setdefault(_group_key(ex), i))
        src = (ex.meta or {}).get("augmented_from")
        if src is not None and str(src) in by_id:
            union(i, by_id[str(src)])

    units: dict[str, list[int]] = defaultdict(list)
    for i in range(len(examples)):
        root = examples[find(i)]
        # Name a unit by its root's group key (or id), so the sort in split_examples is order-free.
        units[_group_key(root) if by == "group" else root.id].append(i)
    return dict(units)


def _label(ex: Example) -> str:
    return _NO_TARGET if ex.target is None else str(ex.target)


def _is_closed_set(firsts: list[Example]) -> bool:
    """Targets form a closed label set: all plain scalars, and labels repeat (free text mostly doesn't)."""
    if not firsts or not all(isinstance(ex.target, (str, int, bool)) for ex in firsts):
        return False
    n_labels = len({_label(ex) for ex in firsts})
    return n_labels <= max(1, len(firsts) // 2)


def _largest_remainder(n: int, fracs: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to n, each within 1 of n * fraction (Hamilton's method)."""
    quotas = {k: n * f for k, f in fracs.items()}
    counts = {k: math.floor(q + 1e-9) for k, q in quotas.items()}  # 1e-9: 400*0.15 is 59.999...
    left = n - sum(counts.values())
    # Ties go to the larger fraction, then to the split listed first: deterministic and unsurprising.
    order = sorted(fracs, key=lambda k: (-(quotas[k] - counts[k]), -fracs[k], list(fracs).index(k)))
    for k in order[:left]:
        counts[k] += 1
    return counts


def _allocate(
    strata: dict[str, list[str]], fracs: dict[str, float], totals: dict[str, int], rng: random.Random
) -> dict[str, dict[str, int]]:
    """Per-stratum split counts: each stratum rounded by largest remainder, columns summing to `totals`.

    Start from each cell's floor, then hand out the leftover units cell by cell in order of remainder,
    only where both the stratum and the split still need one. Many singleton strata could otherwise all
    round toward the biggest split; the column constraint keeps the overall counts exact.
    """
    names = list(fracs)
    cells = {s: {k: math.floor(len(ks) * fracs[k] + 1e-9) for k in names} for s, ks in strata.items()}
    need_row = {s: len(ks) - sum(cells[s].values()) for s, ks in strata.items()}
    need_col = {k: totals[k] - sum(cells[s][k] for s in strata) for k in names}
    cands = [
        (len(ks) * fracs[k] - cells[s][k], rng.random(), s, k)
        for s, ks in strata.items()
        for k in names
        if fracs[k] > 0
    ]
    cands.sort(key=lambda c: (-c[0], c[1]))
    for rem, _, s, k in cands:
        if rem > 1e-9 and need_row[s] > 0 and need_col[k] > 0:
            cells[s][k] += 1
            need_row[s] -= 1
            need_col[k] -= 1
    # Rarely the greedy pass paints itself into a corner; place what is left wherever columns have room.
    for s in strata:
        for k in sorted(names, key=lambda k: -fracs[k]):
            while need_row[s] > 0 and need_col[k] > 0:
                cells[s][k] += 1
                need_row[s] -= 1
                need_col[k] -= 1
    assert all(v == 0 for v in need_row.values()) and all(v == 0 for v in need_col.values()), (need_row, need_col)
    return cells
