"""Errors spanmeter raises, at configuration time only."""


class ConfigurationError(ValueError):
    """A setting spanmeter cannot use; the message names the setting and the fix."""
