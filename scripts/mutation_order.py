"""pytest plugin for mutation runs (scripts/mutation.py loads it with `-p mutation_order`): the tests run fastest
first, by the durations mutmut measured in its timing run (mutants/mutmut-stats.json, read from the working
directory mutmut runs pytest in), so a mutant that a fast test kills does not wait for the slow ones (mutmut
stops at the first failure). Without the file (mutmut's own timing run) the order is left alone."""

from __future__ import annotations

import json
from pathlib import Path


def pytest_collection_modifyitems(session, config, items) -> None:
    stats = Path("mutmut-stats.json")
    if not stats.is_file():
        return
    try:
        durations = json.loads(stats.read_text()).get("duration_by_test", {})
    except ValueError:
        return
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))
