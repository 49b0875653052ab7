"""What a run reports while it trains, through clu: steps and images per second, and the
console's lines (a line per logging interval and per evaluated set; TensorBoard gets every
scalar separately, through clu's summary writer).

clu's metric writers and periodic actions import TensorFlow, so ``train`` imports this module
when a run starts, not with itself: the train step and the benchmarks import without TensorFlow.
"""

import time
from collections.abc import Mapping

from absl import logging
from clu import periodic_actions
from clu.metric_writers import interface

from resnet_jax import console


class ReportProgress(periodic_actions.ReportProgress):
  """clu's progress report without its work-unit note (the console's training line gives the
  speed and ETA instead): ``steps_per_sec`` and ``uptime`` as clu writes them, and the images per
  second those steps are, ``train_images_per_sec`` over every device and
  ``train_images_per_sec_per_device``, through the same writer."""

  def __init__(self, *, batch_size: int, num_devices: int, **kwargs):
    super().__init__(every_secs=None, **kwargs)
    self._batch_size = batch_size
    self._num_devices = num_devices

  def _apply(self, step: int, t: float):
    # Steps and seconds since the previous report.
    steps_per_sec = (step - self._previous_step) / (t - self._previous_time)
    images_per_sec = steps_per_sec * self._batch_size
    self._writer.write_scalars(step, {
        'steps_per_sec': steps_per_sec, 'uptime': time.monotonic() - self._t0,
        'train_images_per_sec': images_per_sec,
        'train_images_per_sec_per_device': images_per_sec / self._num_devices})


def _number(value: float) -> str:
  return f'{value:.4g}'


class ConsoleWriter(interface.MetricWriter):
  """A clu metric writer that logs a training line per logging step and an evaluation line per
  evaluated set, from the scalars the run writes anyway.

  The progress report's ``steps_per_sec`` and ``train_images_per_sec`` of a step come before its
  ``train_*`` metrics (the loop calls its hooks first): they give the line's speed and ETA.
  ``eval_names``: {summary prefix: what the line calls that set}, e.g. {'eval_': 'test'}.
  """

  def __init__(self, total_steps: int, eval_names: Mapping[str, str]):
    self._total_steps = total_steps
    self._eval_names = dict(eval_names)
    self._speed: dict[str, float] = {}

  def write_scalars(self, step: int, scalars: Mapping[str, float]):
    if 'steps_per_sec' in scalars or 'train_images_per_sec' in scalars:
      self._speed.update(scalars)
    if 'train_loss' in scalars:
      logging.info('%s', self.train_line(step, scalars))
    for prefix, name in self._eval_names.items():
      if f'{prefix}error_top1' in scalars:
        logging.info('%s', self.eval_line(step, name, prefix, scalars))

  def train_line(self, step: int, scalars: Mapping[str, float]) -> str:
    """'step 46/368 (12 %): loss 0.1555, error 4.55 %, lr 0.1, 936 images/s, ETA 22 s'."""
    line = (f'step {step}/{self._total_steps} ({100 * step / self._total_steps:.0f} %): '
            f'loss {_number(scalars["train_loss"])}, error '
            f'{console.percent(scalars["train_error_top1"])}, '
            f'lr {_number(scalars["train_learning_rate"])}')
    if 'train_images_per_sec' in self._speed:
      line += f', {self._speed["train_images_per_sec"]:.0f} images/s'
    steps_per_sec = self._speed.get('steps_per_sec')
    if steps_per_sec and step < self._total_steps:
      line += f', ETA {console.duration((self._total_steps - step) / steps_per_sec)}'
    return line

  @staticmethod
  def eval_line(step: int, name: str, prefix: str, scalars: Mapping[str, float]) -> str:
    """'step 92: test error 1.68 %, top-5 0.00 %, loss 0.04057'."""
    errors = console.errors(name, scalars[f'{prefix}error_top1'], scalars[f'{prefix}error_top5'])
    return f'step {step}: {errors}, loss {_number(scalars[f"{prefix}loss"])}'

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass
