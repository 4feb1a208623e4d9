"""The project's own exceptions: each carries a message meant for a person."""


class Seq2SeqError(Exception):
    """Base class: anything the app or the command line shows as a clean message."""


class InputError(Seq2SeqError, ValueError):
    """The text given cannot be processed (empty, nothing left after tokenizing, ...)."""


class CheckpointError(Seq2SeqError):
    """A checkpoint is missing, truncated, corrupt, tampered with or incompatible."""


class DataError(Seq2SeqError, FileNotFoundError):
    """Data files are missing or malformed."""
