"""Typed errors of the domain package; callers map them to retryable or fatal task failures."""

from __future__ import annotations


class CmmsPmError(Exception):
    """Base class of every error raised by ``cmms_pm``."""


class DataValidationError(CmmsPmError, ValueError):
    """A frame breaks the schema contract; the message names the offending column or problem."""


class DataSourceError(CmmsPmError):
    """A data source cannot be read: missing file, unsupported format or missing target column."""


class InvalidParamsError(CmmsPmError, ValueError):
    """A training conf breaks the parameter schema; ``problems`` lists each offending field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class SpecError(CmmsPmError, ValueError):
    """A model spec file is invalid; the message names the file and the field."""


class TuningError(CmmsPmError):
    """A tuning study cannot give a model (no trial completed); a retry would find the same trials."""


class ContractError(CmmsPmError, ValueError):
    """A data contract cannot be derived, read or applied; the message names columns, never values."""


class ScaffoldError(CmmsPmError, ValueError):
    """``make new-model`` refuses: a name a spec cannot have, or a spec that exists already."""


class SourceNotAllowedError(DataSourceError):
    """A source path or URI is refused before anything is read: outside the allowed roots, or unsafe
    (``..``, ``~``, a query string, user-info, another scheme or suffix); the message says which part."""


class SplitIntegrityError(DataSourceError):
    """A written split no longer has the SHA-256 its manifest recorded (overwritten, truncated or
    tampered with after ``extract_data`` wrote it): reading it again gives the same bytes."""


class DataSourceUnavailableError(DataSourceError):
    """Reading a source failed on I/O (network, storage service): the same request may succeed later."""


class LabelLeakError(DataValidationError):
    """Feature columns leak the label (:mod:`cmms_pm.leakage`); the message names each column, the
    test and its number. Not retried: the same batch leaks the same way."""
