"""Errors jmed raises about data, configs and training, importable without any data library.

`UserError` marks what the user can fix (a file, a flag, a run directory): the command-line
scripts print such an error as one line. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Bad input from the user; the message alone says what to fix."""


class DataError(UserError, ValueError):
  """A data file is corrupt or inconsistent, or a dataset request is invalid.

  The message always names the offending file (or the bad argument, split or row), so a single
  exception is enough to tell the user what to fix.
  """


class MissingDataError(DataError, FileNotFoundError):
  """A required data file does not exist; the message names its path.

  Subclasses both `DataError` and `FileNotFoundError`, so either can be caught.
  """


class ConfigError(UserError, ValueError):
  """A config value (a flag) no run can use, or one that contradicts the run being resumed;
  the message names the field."""


class RunDirError(UserError, FileExistsError):
  """The output directory holds another run (or no run to resume); the message names it."""


class NonFiniteLossError(UserError, FloatingPointError):
  """The training loss became NaN or infinite; the message names the step."""
