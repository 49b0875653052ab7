"""What inference needs of a run besides its variables, recorded so that it outlives the data.

A run's predictions depend on its training data through the preprocessing: the train split's
mean is subtracted from every image. The chief writes these constants into the workdir when the
run starts (``inference.json`` beside ``config.json``, its arrays in ``inference.npz``), and an
export carries the same record (``exports``), so a run or an export predicts after its dataset
is gone. The record is a dict of named constants, extended by name:

* ``net``, ``model`` (the config's ``model`` section), ``dataset``, ``label_names``;
* ``image_size`` S and ``channels`` C of the images the model sees, ``eval_batch_size``;
* ``eval_view``: how evaluation brings an image to S x S. ``'resize'`` (the SMALL family:
  scaled to [0, 1] and resized bilinearly, antialiased, to S x S); ``'centre_crop'`` (the IMAGENET
  family: the centre crop S wide at shorter side ``eval_shorter_side``, resized to uint8);
* the normalisation, ``pixels / 255 - channel_mean - pixel_mean``: ``channel_mean`` (C floats;
  the IMAGENET family's RGB mean) and the array ``pixel_mean`` [S, S, C] (the SMALL family's
  train mean image; the IMAGENET family's per-pixel correction, where it has one), each absent
  where the run subtracts none.

Nothing here imports TensorFlow: ``data.eval_inputs`` makes the record of a run's data and
applies it to images.
"""

import dataclasses
import io
import json

import ml_collections
import numpy as np

from resnet_jax import workdirs

RECORD_FILE = 'inference.json'
ARRAYS_FILE = 'inference.npz'


@dataclasses.dataclass(frozen=True)
class InferenceRecord:
  """The named constants (JSON values) and arrays (float32 numpy) of a run's inference."""
  constants: dict
  arrays: dict

  @property
  def image_size(self) -> int:
    return self.constants['image_size']

  @property
  def channels(self) -> int:
    return self.constants['channels']

  @property
  def label_names(self) -> tuple[str, ...]:
    return tuple(self.constants['label_names'])

  @property
  def net(self) -> str:
    return self.constants['net']

  @property
  def model_config(self) -> ml_collections.ConfigDict:
    """The run's ``config.model``, from which ``models.from_config`` builds the net."""
    return ml_collections.ConfigDict(self.constants['model'])

  @property
  def channel_mean(self) -> np.ndarray:
    """float32 [C] subtracted from the pixels scaled to [0, 1] (zeros where none is)."""
    return np.float32(self.constants.get('channel_mean') or np.zeros(self.channels))

  @property
  def pixel_mean(self) -> np.ndarray:
    """float32 [S, S, C] subtracted after ``channel_mean`` (zeros where none is)."""
    shape = (self.image_size, self.image_size, self.channels)
    return self.arrays.get('pixel_mean', np.zeros(shape, np.float32))

  def normalize(self, pixels, xp=np):
    """uint8 pixels [..., S, S, C] at the eval size -> the float32 images the model sees, in
    the array module ``xp`` (numpy, or ``jax.numpy`` inside a traced function)."""
    return (xp.asarray(pixels).astype(xp.float32) / 255.0 - self.channel_mean) - self.pixel_mean

  def to_json(self) -> str:
    return json.dumps(self.constants, indent=2, sort_keys=True)

  def arrays_npz(self) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **self.arrays)
    return buffer.getvalue()

  @classmethod
  def from_json(cls, constants_json: str, arrays) -> 'InferenceRecord':
    return cls(json.loads(constants_json), {k: np.asarray(v) for k, v in arrays.items()})

  @classmethod
  def from_files(cls, constants_json: str, arrays_npz: bytes) -> 'InferenceRecord':
    with np.load(io.BytesIO(arrays_npz)) as arrays:
      return cls.from_json(constants_json, {k: arrays[k] for k in arrays.files})


def save(inference: InferenceRecord, workdir: str) -> None:
  """Writes ``inference`` into ``workdir`` (``inference.json``, ``inference.npz``)."""
  workdirs.save_bytes(inference.arrays_npz(), workdir, ARRAYS_FILE)
  workdirs.save_text(inference.to_json(), workdir, RECORD_FILE)


def load(workdir: str) -> InferenceRecord | None:
  """The record that ``save`` wrote in ``workdir``; None for a run that wrote none."""
  directory = workdirs.path(workdir)
  if not (directory / RECORD_FILE).exists():
    return None
  return InferenceRecord.from_files((directory / RECORD_FILE).read_text(),
                                    (directory / ARRAYS_FILE).read_bytes())
