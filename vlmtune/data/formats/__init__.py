"""On-disk dataset formats: one module per reader, each registered with `@FORMATS.register("name")`:

    reader(path, *, skip_invalid=False, **options) -> Iterator[Example]    (with .rejected and .rejects_path)

The registry (`vlmtune.registry.FORMATS`) finds them by reading this package's source and imports a reader
when it is used: `FORMATS.get("jsonl")`.
"""
