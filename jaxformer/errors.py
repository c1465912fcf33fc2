"""Errors that are the user's to fix. The CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input (config, files, prompts): the message names the problem and the fix."""


class ConfigError(UserError, ValueError):
    """A config key or value is wrong."""


class StartupError(UserError):
    """A multi-process run could not start: a process missing, unreachable or misconfigured."""
