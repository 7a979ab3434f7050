"""Errors of the producers package; each message is shown to the user as is.

All subclass ``infra.errors.ModelBusError`` so the CLI prints one line and exits 2.
A refused dataset is never stored or published, whichever of these is raised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infra.errors import ModelBusError

if TYPE_CHECKING:
    from producers.datasets.report import ValidationReport


class ProducerError(ModelBusError):
    """Base of every expected error raised by the producers SDK and CLI."""


class InvalidNameError(ProducerError):
    """A dataset or column name is not allowed (path traversal, odd characters, too long)."""


class InvalidSpecError(ProducerError):
    """The dataset spec contradicts itself or names columns the data does not have."""


class DatasetInputError(ProducerError):
    """The input cannot be read as a table: corrupt, truncated, empty, wrongly encoded or of an unknown kind."""


class DatasetValidationError(ProducerError):
    """The data was read but failed checks; ``.report`` lists every failed check."""

    def __init__(self, name: str, report: ValidationReport):
        self.report = report
        failed = report.failures
        cols = sorted({i.column for i in failed if i.column})
        where = f" (columns: {', '.join(cols[:6])}{', ...' if len(cols) > 6 else ''})" if cols else ""
        first = failed[0].message if failed else "validation failed"
        more = f"; {len(failed) - 1} more" if len(failed) > 1 else ""
        super().__init__(f"dataset {name!r} refused: {len(failed)} check(s) failed{where}: {first}{more}")


class DatasetConflictError(ProducerError):
    """The same data already exists under this name with a different spec; versions are immutable."""


class DatasetNotFoundError(ProducerError):
    """No committed version matches the requested name@version."""


class IntegrityError(ProducerError):
    """Stored bytes do not match the checksum recorded when the version was committed."""
