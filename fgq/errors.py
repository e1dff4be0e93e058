"""The error a job reports as one line: its own module (importing nothing) so that every part can raise it."""


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line that says what to change."""


class NonFiniteError(ValueError):
    """A NaN or infinity where a number must be finite; the message names where (tensor, block, task, sequence)."""
