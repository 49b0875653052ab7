"""A run's metrics read back: the scalar summaries of its TensorBoard event files, and its
results (``results.jsonl``: a line per evaluation; ``results.json``: the finished run's)."""

import json

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


RESULTS_FILE = 'results.jsonl'    # Every evaluation: its step, seconds, every metric of every set.
FINAL_RESULT_FILE = 'results.json'  # The last evaluation of a finished run, with what it was.


def append_result(workdir: str, record: dict) -> None:
  """Adds ``record`` (one evaluation) as a line of ``workdir/results.jsonl``."""
  path = workdirs.path(workdir) / RESULTS_FILE
  line = json.dumps(record, sort_keys=True) + '\n'
  if workdirs.is_remote(workdir):  # Object stores do not append: the file is written whole.
    workdirs.save_text((path.read_text() if path.exists() else '') + line, workdir,
                       RESULTS_FILE)
  else:
    with open(path, 'a', encoding='utf-8') as f:
      f.write(line)


def read_results(workdir: str) -> list[dict]:
  """The evaluations of ``workdir/results.jsonl`` by step ([] where there are none). A step
  evaluated twice (a run resumed from a checkpoint older than its last evaluation) keeps the
  later line; a last line left unfinished (a run killed while writing it) is skipped."""
  path = workdirs.path(workdir) / RESULTS_FILE
  if not path.exists():
    return []
  by_step = {}
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    by_step[record['step']] = record
  return [by_step[step] for step in sorted(by_step)]


def read_final_result(workdir: str) -> dict | None:
  """A finished run's ``results.json`` (None where the run has not finished)."""
  path = workdirs.path(workdir) / FINAL_RESULT_FILE
  return json.loads(path.read_text()) if path.exists() else None
