"""The file ``Predictor.export`` writes: everything inference needs, in one flax msgpack.

``{'format': FORMAT, 'variables': {'params', 'batch_stats'}, 'inference': {'constants': JSON
text, 'arrays': {name: array}}}``: the variables and the run's inference record
(``inference_record``: the net's name and model config, label names, image size, eval view and
mean), so the file loads without the run's config or data. Files written before the record hold
the variables alone, ``{'params', 'batch_stats'}``, and still load (without a record). Beside it,
``serving_path`` names the StableHLO artifact (``serving``).
"""

import os

import flax
import jax

from resnet_jax import inference_record, serving

FORMAT = 'resnet_jax.export/1'


def serving_path(path: str) -> str:
  """Where the StableHLO artifact of the export at ``path`` goes: ``model.msgpack`` ->
  ``model.stablehlo``."""
  return os.path.splitext(path)[0] + serving.SUFFIX


def _write(data: bytes, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + '.tmp', 'wb') as f:
    f.write(data)
  os.replace(path + '.tmp', path)


def write(path: str, variables, record: inference_record.InferenceRecord,
          serving: bytes | None = None) -> None:
  """Writes the export of ``variables`` and ``record`` to ``path``, and ``serving`` (a serialized
  ``jax.export``) to ``serving_path(path)``, each whole or not at all."""
  if serving is not None and serving_path(path) == path:
    raise ValueError(f'{path} would be overwritten by its StableHLO artifact: give the export '
                     'another suffix, e.g. .msgpack.')
  _write(flax.serialization.msgpack_serialize({
      'format': FORMAT, 'variables': jax.device_get(variables),
      'inference': {'constants': record.to_json(), 'arrays': dict(record.arrays)}}), path)
  if serving is not None:
    _write(bytes(serving), serving_path(path))


def variables_of(contents) -> dict:
  """The variables in the restored contents of an export, of either format."""
  if isinstance(contents, dict) and contents.get('format') == FORMAT:
    return contents['variables']
  return contents


def read(path: str) -> tuple[dict, inference_record.InferenceRecord | None]:
  """``(variables, record)`` of an export; the record is None in a file of variables alone."""
  with open(path, 'rb') as f:
    contents = flax.serialization.msgpack_restore(f.read())
  if not (isinstance(contents, dict) and contents.get('format') == FORMAT):
    return contents, None
  inference = contents['inference']
  return contents['variables'], inference_record.InferenceRecord.from_json(
      inference['constants'], inference['arrays'])
