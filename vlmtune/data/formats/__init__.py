"""On-disk dataset formats. Each module registers a reader in `vlmtune.registry.FORMATS`:

    reader(path, **options) -> Iterator[Example]

Importing this package registers every built-in format (`FORMATS.get("jsonl")`).
"""

from vlmtune.data.formats import jsonl  # noqa: F401  (registers "jsonl")
