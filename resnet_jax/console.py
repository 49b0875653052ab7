"""What a person reads: the number formats every command shares, and the progress bar of a run
on an interactive terminal (tqdm), with absl's lines printed above it.

A run's lines go through absl's log (a log file or a pipe gets them with their time stamps);
``reporting.ConsoleWriter`` composes them. Nothing here imports TensorFlow.
"""

import sys

from absl import logging


def percent(fraction: float) -> str:
  """An error rate as every command prints it: '0.67 %'."""
  return f'{100 * fraction:.2f} %'


def errors(name: str, top1: float, top5: float, num_examples: int | None = None) -> str:
  """'test error 0.67 % (2/297), top-5 0.00 %': the count of wrong examples where the error is
  a whole number of them (ties count in fractions)."""
  wrong = top1 * (num_examples or 0)
  count = (f' ({round(wrong)}/{num_examples})' if num_examples and abs(wrong - round(wrong)) < 1e-3
           else '')
  return f'{name} error {percent(top1)}{count}, top-5 {percent(top5)}'


def duration(seconds: float) -> str:
  """'45 s' under a minute, '12 min 05 s' under an hour, '3 h 05 min' beyond."""
  seconds = max(0, round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  if seconds < 3600:
    return f'{seconds // 60} min {seconds % 60:02d} s'
  return f'{seconds // 3600} h {seconds % 3600 // 60:02d} min'


class _ThroughBar:
  """A stream that writes through tqdm, so that log lines print above the progress bar."""

  def __init__(self, stream):
    self._stream = stream

  def write(self, text):
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    if text.rstrip('\n'):
      tqdm.write(text.rstrip('\n'), file=self._stream)

  def flush(self):
    self._stream.flush()


class ProgressBar:
  """Called with each step a call ended at, moves a progress bar of the run's steps, drawn on an
  interactive terminal with absl's lines printed above it; on anything else it does nothing.
  ``close()`` takes it down and gives absl its stream back."""

  def __init__(self, total_steps: int, start_step: int, enabled: bool = True):
    self._bar = None
    stream = sys.stderr
    if not (enabled and stream.isatty()):
      return
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    self._handler = logging.get_absl_handler().python_handler
    self._stream = self._handler.stream
    # Redrawn at every call's end (one draw per call costs nothing beside a train step).
    self._bar = tqdm(total=total_steps, initial=start_step, unit='step', file=stream,
                     leave=False, dynamic_ncols=True, mininterval=0)
    self._handler.stream = _ThroughBar(stream)

  def __call__(self, step: int) -> None:
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._handler.stream = self._stream
      self._bar = None
