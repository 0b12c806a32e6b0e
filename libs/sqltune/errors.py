"""The exception hierarchy of sqltune.

Every error a user can cause derives from :class:`SqltuneError`, so entry points can catch one type,
print its message (which names the value, the flag or file, and the fix) and exit non-zero without a
traceback. Library code raises the most specific subclass.
"""

from __future__ import annotations


class SqltuneError(Exception):
    """Base class of every error sqltune raises on purpose."""


class ConfigError(SqltuneError, ValueError):
    """A config file, field or ``key=value`` override is invalid."""


class DataError(SqltuneError, ValueError):
    """A dataset file or record is malformed; the message names file, line and field."""


class MissingDatabaseError(DataError):
    """Examples name databases that are missing or unreadable; the message lists them and the ways out."""


class StorageError(SqltuneError):
    """A URI is malformed, an endpoint is unreachable, or an artifact is missing or altered."""


class NotFoundError(StorageError, FileNotFoundError):
    """No file or object at a URI (still a FileNotFoundError, so callers probing for a file keep working)."""


class IntegrityError(StorageError):
    """An artifact does not match its manifest (flipped byte, missing file, missing manifest)."""


class SQLError(SqltuneError):
    """A problem with SQL handling that callers asked to raise (e.g. a bad dialect name)."""


class ModelError(SqltuneError):
    """A model or adapter cannot be built, loaded or used as configured."""


class ResourceError(SqltuneError):
    """A resource the config asks for (GPU, bucket, cluster) is not available."""


class MissingDependencyError(SqltuneError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""


def missing(package: str, extra: str) -> MissingDependencyError:
    """Build the error raised when an optional heavy import fails."""
    return MissingDependencyError(
        f"{package} is not installed; install it with: pip install 'sqltune[{extra}]'"
    )
