"""What a run reports while it trains, through clu: progress with steps and images per second.

clu's metric writers and periodic actions import TensorFlow, so ``train`` imports this module
when a run starts, not with itself: the train step and the benchmarks import without TensorFlow.
"""

from clu import periodic_actions


class ReportProgress(periodic_actions.ReportProgress):
  """clu's progress report (steps/s and ETA in the log; ``steps_per_sec`` and ``uptime`` in the
  summaries), with the images per second those steps are: ``train_images_per_sec`` over every
  device and ``train_images_per_sec_per_device``, through the same writer."""

  def __init__(self, *, batch_size: int, num_devices: int, **kwargs):
    super().__init__(**kwargs)
    self._batch_size = batch_size
    self._num_devices = num_devices

  def _apply(self, step: int, t: float):
    # The steps per second clu reports: steps and seconds since its previous report.
    steps_per_sec = (step - self._previous_step) / (t - self._previous_time)
    super()._apply(step, t)
    images_per_sec = steps_per_sec * self._batch_size
    self._writer.write_scalars(step, {
        'train_images_per_sec': images_per_sec,
        'train_images_per_sec_per_device': images_per_sec / self._num_devices})
