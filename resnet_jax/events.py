"""Reads the scalar summaries that training wrote to a workdir's TensorBoard event files."""

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from resnet_jax import workdirs


def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{tag: (steps, values)} sorted by step, from every event file in ``workdir``.

  A step written twice (a run resumed from a checkpoint older than its last log line) keeps the
  value written last, i.e. the one of the run that went on.
  """
  if not workdirs.path(workdir).is_dir():
    raise FileNotFoundError(f'No workdir {workdir}.')
  accumulator = event_accumulator.EventAccumulator(
      workdir, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
  accumulator.Reload()
  by_tag = {}
  for tag in accumulator.Tags()[event_accumulator.TENSORS]:
    if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != 'scalars':
      continue  # hparams, text, images.
    points = {e.step: float(tensor_util.make_ndarray(e.tensor_proto))
              for e in accumulator.Tensors(tag)}
    by_tag[tag] = points
  for tag in accumulator.Tags()[event_accumulator.SCALARS]:
    by_tag[tag] = {e.step: e.value for e in accumulator.Scalars(tag)}
  return {tag: (np.array(sorted(points), np.int64),
                np.array([points[s] for s in sorted(points)], np.float64))
          for tag, points in by_tag.items() if points}
