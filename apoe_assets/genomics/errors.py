"""Input errors that name the file and the record or field at fault."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input: ``file: [record: ]message``."""

    def __init__(self, path: Path | str, message: str, record: str | None = None):
        self.path = str(path)
        self.record = record
        where = f"{self.path}: {record}: " if record else f"{self.path}: "
        super().__init__(where + message)
