"""What a TCIA download raises: :class:`DownloadError` (not retried further) and its kinds."""

from __future__ import annotations

class DownloadError(RuntimeError):
    """A download that cannot succeed as asked (not retried further)."""


class CollectionNotAccessible(DownloadError):
    """NBIA returned no series: a misspelt name, or a limited/controlled-access collection."""


class RetryableError(DownloadError):
    """A transient failure: connection, timeout, truncated body, 429/5xx, or a series that failed checks."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(DownloadError):
    """The run's deadline passed: nothing is retried any more."""
