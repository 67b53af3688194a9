"""The one error type for bad input, and the CLI edge that prints it as one line."""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any


class InputError(Exception):
    """Bad user input: carries the file, and where known the record and the field."""

    def __init__(self, file: Any, message: str, record: Any = None, field: str | None = None):
        self.file = str(file)
        self.record = record
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.file]
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return ": ".join(where) + f": {self.message}"


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Run a script's main(argv); an InputError becomes one line on stderr and exit status 2."""
    try:
        result = main(argv)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if isinstance(result, int) and result:
        raise SystemExit(result)
