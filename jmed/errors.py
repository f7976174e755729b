"""Errors jmed raises about data and training, importable without any data library."""


class DataError(ValueError):
  """A data file is corrupt or inconsistent, or a dataset request is invalid.

  The message always names the offending file (or the bad argument, split or row), so a single
  exception is enough to tell the user what to fix.
  """


class MissingDataError(DataError, FileNotFoundError):
  """A required data file does not exist; the message names its path.

  Subclasses both `DataError` and `FileNotFoundError`, so either can be caught.
  """


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite; the message names the step."""
