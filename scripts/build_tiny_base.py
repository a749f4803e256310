"""Build the built-in tiny base VLM with the default settings and ship it in vlmtune/assets/tiny-base/.

    PYTHONPATH=. python scripts/build_tiny_base.py            # about 2-3 minutes on a 2-core CPU

Run it after changing anything that enters `TinyBaseConfig.key()` (the tokenizer corpus, the captions, the build
settings); commit the result. `tests/test_models.py::test_fresh_build_matches_the_shipped_base` (slow) rebuilds
the base and checks that it behaves as the shipped one does.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from vlmtune import logs
from vlmtune.build import SHIPPED, build_base
from vlmtune.models.tiny import TinyBaseConfig


def main() -> None:
    logs.setup()
    with tempfile.TemporaryDirectory(prefix="tiny-ship-") as cache:
        built = build_base(TinyBaseConfig(), cache=cache, fresh=True)
        if SHIPPED.exists():
            shutil.rmtree(SHIPPED)
        shutil.copytree(built, SHIPPED)
    size = sum(f.stat().st_size for f in SHIPPED.iterdir()) / 2**20
    print(f"shipped {SHIPPED} ({size:.1f} MB)")


if __name__ == "__main__":
    main()
