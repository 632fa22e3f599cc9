"""Errors whose message is meant for the user: the CLI prints it as one line and exits with 2."""

from registry import RegistryError


class ClasszooError(Exception):
    """A user-facing error (bad configuration, missing data): shown without a traceback."""


class ConfigError(ClasszooError, ValueError):
    """Arguments that cannot work together (e.g. a net whose input shape does not fit the data)."""


class DataNotFoundError(ClasszooError, FileNotFoundError):
    """A dataset that is not on disk while downloading is off."""


USER_ERRORS = (ClasszooError, RegistryError)
