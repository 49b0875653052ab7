"""What an error from reading a checkpoint says about it: damaged (set it aside, read the one
before), transient (retry) or unknown (stop), from the error and every error it was raised from."""

import json
import re

# tensorstore / gRPC status codes in an error's message, as orbax passes them on. A file whose
# bytes are not what its reader expects (truncated, emptied, overwritten) is damage.
_DAMAGE_CODES = ('DATA_LOSS', 'NOT_FOUND', 'OUT_OF_RANGE', 'FAILED_PRECONDITION')
_TRANSIENT_CODES = ('UNAVAILABLE', 'DEADLINE_EXCEEDED', 'RESOURCE_EXHAUSTED', 'ABORTED')
_STATUS_CODE = re.compile(r'\b(' + '|'.join(_DAMAGE_CODES + _TRANSIENT_CODES) + r')\b')


def _kind_of(error: BaseException) -> str:
  """'damaged', 'transient' or 'unknown': what one error, read alone, says."""
  if isinstance(error, (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError)):
    return 'damaged'
  if isinstance(error, (TimeoutError, ConnectionError)):
    return 'transient'
  found = _STATUS_CODE.search(str(error))
  if found:
    return 'damaged' if found.group(1) in _DAMAGE_CODES else 'transient'
  if 'incomplete checkpoint' in str(error):  # orbax: a step without its commit marker.
    return 'damaged'
  return 'unknown'


def _deciding_error(error: BaseException) -> tuple[str, BaseException]:
  """The kind of a read error and the error in its chain that tells it.

  Orbax wraps tensorstore's errors (``Exception('Encountered error while reading array
  index...')`` raised from the ``ValueError`` that holds the status code), so the error and
  every error it was raised from are read, outermost first.
  """
  chain = error
  while chain is not None:
    kind = _kind_of(chain)
    if kind != 'unknown':
      return kind, chain
    chain = chain.__cause__ or chain.__context__
  return 'unknown', error


def classify(error: BaseException) -> str:
  """'damaged', 'transient' or 'unknown': what a read error says about the checkpoint."""
  return _deciding_error(error)[0]


def describe(error: BaseException) -> str:
  """The error that tells what went wrong, in one line: its type and its first line."""
  error = _deciding_error(error)[1]
  text = str(error).splitlines()[0][:300] if str(error) else ''
  return f'{type(error).__name__}: {text}'
