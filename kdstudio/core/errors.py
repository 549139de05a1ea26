"""The engine's own exception types.

Each carries a plain-language message that names what is wrong and what would be
right, so the command line can print it and the app can show it in a dialog with
a specific title.
"""

from __future__ import annotations


class KDStudioError(Exception):
    """Base class for every error the engine raises on purpose."""

    title = "KD Studio error"

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class ConfigError(KDStudioError):
    """A run configuration key is unknown or has a value that is not allowed."""

    title = "Invalid run configuration"


class ModelError(KDStudioError):
    """A teacher or student model cannot be found, downloaded or loaded."""

    title = "Model could not be loaded"


class CompatibilityError(KDStudioError):
    """Teacher and student cannot be combined with the chosen method."""

    title = "Teacher and student do not fit together"


class DataError(KDStudioError):
    """A data set, file, column or split is missing or unusable."""

    title = "Data problem"


class RunError(KDStudioError):
    """A run folder or checkpoint is missing, damaged or cannot be resumed."""

    title = "Run problem"


class OutOfMemory(KDStudioError):
    """The device ran out of memory during a run (the message says what to change)."""

    title = "Out of memory"


class SweepError(KDStudioError):
    """A sweep's students, axis or queue file is unusable, or it is already running."""

    title = "Sweep problem"


class ExportError(KDStudioError):
    """A student cannot be exported as asked (format, quantization, a missing package, the
    exporter itself)."""

    title = "Export failed"


class ServeError(KDStudioError):
    """A served teacher (teacher.endpoint) cannot be reached, refuses the request or answers
    in a shape that is not what was asked for (the message names which, and what is right)."""

    title = "Served teacher problem"


class DivergedError(RunError):
    """The training loss stopped being a number: the run stops, keeping its last good
    checkpoint."""

    title = "Training went wrong"


class StoppedError(KDStudioError):
    """Raised inside long preparation stages when the user asked to stop."""

    title = "Stopped"
