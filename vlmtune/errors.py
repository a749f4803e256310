"""The error types vlmtune raises for problems a user can fix (bad input, bad config)."""

from __future__ import annotations


class VlmtuneError(Exception):
    """A problem the user can fix. The CLI prints the message without a traceback."""


class ConfigError(VlmtuneError):
    """A recipe or command-line option is wrong."""


class DataError(VlmtuneError):
    """A data record or file is wrong. The message names the file, the line/record, the field and the fix."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        fix: str | None = None,
    ):
        self.file, self.line, self.field, self.fix = file, line, field, fix
        where = ""
        if file is not None:
            where = f"{file}"
            if line is not None:
                where += f":{line}"
            where += ": "
        what = f"field '{field}': " if field else ""
        stop = "" if message.rstrip().endswith((".", "!", "?")) else "."
        tail = f"{stop} Fix: {fix}" if fix else ""
        super().__init__(f"{where}{what}{message}{tail}")
