"""The project's exception hierarchy. Every error says what is wrong and what to do about it.

The service maps these to HTTP status codes in one place (``service``); library code never exits.
"""


class AedmaeError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigError(AedmaeError, ValueError):
    """A configuration value is invalid."""


class DataError(AedmaeError, ValueError):
    """Input data (frames, videos, labels) is missing, unreadable or inconsistent."""


class CheckpointError(AedmaeError, ValueError):
    """A model file is missing, corrupt or does not match its configuration."""
