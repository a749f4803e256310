"""On-disk dataset formats. Each module registers a reader in `vlmtune.registry.FORMATS`:

    reader(path, **options) -> Iterator[Example]

Importing this package registers every built-in format (`FORMATS.get("jsonl")`).
"""

# Importing a module registers its reader.
from vlmtune.data.formats import csv_labels, imagefolder, jsonl, mcq_json, sharegpt, visdial  # noqa: F401
