"""The one error type that reaches the user as a one-line message (exit status 2)."""


class ConfigError(ValueError):
    """Bad user input: a scenario key, a value, a missing file or an unknown name.

    The message is one line that names the offending key or file and what would be valid;
    the CLI prints it as ``error: <message>`` and exits with status 2, never a traceback.
    """


class TrainingDiverged(ConfigError):
    """A training loss turned NaN or infinite: the scenario's settings (a learning rate too
    large, no gradient clipping) make training diverge. Reported like bad input, one line
    and exit status 2, since the fix is in the scenario; the run directory is removed."""
