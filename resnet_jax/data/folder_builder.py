"""How a prepared image folder stores its images, and the tfds builder that writes them
(``image_folder`` checks the folder and says where; the stored forms are described there).

Both forms store 8 bits a sample: a 16-bit greyscale PNG is scaled to them (v / 257, rounded),
where PIL's own conversion would clip every value above 255. A file that does not decode fully is
named in one ``DataError`` with every other such file.
"""

import dataclasses
import io
import os
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from resnet_jax.data import registry
from resnet_jax.errors import DataError

JPEG_QUALITY = 95
# How PIL reads a 16-bit greyscale PNG (Pillow 10 on: 'I;16'; before: 'I'), the one kind of file
# here with more than 8 bits a sample; 16-bit colour PNGs PIL reads at 8 bits itself.
SIXTEEN_BIT_MODES = ('I;16', 'I')
LISTED_PROBLEMS = 10  # Files named in one message; the rest are counted.
# What a file that is not an image raises when PIL opens or decodes it.
UNDECODABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def refuse_undecodable(problems: list[str], check: str) -> None:
  if problems:
    listed = '\n  '.join(problems[:LISTED_PROBLEMS])
    more = len(problems) - LISTED_PROBLEMS
    raise DataError(f'{len(problems)} file(s) are not decodable images ({check}); replace or '
                    f'remove them:\n  {listed}' + (f'\n  ... and {more} more' if more > 0 else ''))


def _decoded(path: str) -> tuple[Image.Image, bytes]:
  """The image of a file, fully decoded, and the file's bytes."""
  with open(path, 'rb') as f:
    data = f.read()
  image = Image.open(io.BytesIO(data))
  image.load()
  return image, data


def _eight_bits(image: Image.Image) -> Image.Image:
  """``image`` at 8 bits a sample: a 16-bit greyscale one scaled from 0..65535 to 0..255 (v / 257,
  rounded; PNG stores every bit depth scaled to the full 16 bits), where PIL's ``convert``
  would clip it at 255."""
  if image.mode not in SIXTEEN_BIT_MODES:
    return image
  values = np.asarray(image, np.uint32)
  return Image.fromarray(((values + 128) // 257).astype(np.uint8), 'L')


def eight_bit_image(path: str) -> Image.Image:
  """The image of a file, fully decoded, at 8 bits a sample (a 16-bit greyscale PNG scaled)."""
  return _eight_bits(_decoded(path)[0])


def centre_square(image: Image.Image) -> Image.Image:
  """The largest square at the centre of ``image``, as a small image folder stores it."""
  width, height = image.size
  side = min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  return image.crop((left, top, left + side, top + side))


def _encoded(image: Image.Image, image_format: str, **options) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=image_format, **options)
  return buffer.getvalue()


@dataclasses.dataclass(frozen=True)
class StoredForm:
  """How a prepared folder stores its images: ``size`` None keeps them whole, as JPEG."""
  size: int | None
  channels: int

  def feature(self) -> tfds.features.Image:
    if self.size:
      return tfds.features.Image(shape=(self.size, self.size, self.channels),
                                 encoding_format='png')
    return tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg')

  def encode(self, path: str) -> bytes:
    """A file's image in this form; OSError and the like where it does not decode."""
    image, data = _decoded(path)
    if not self.size and image.format == 'JPEG' and image.mode in ('RGB', 'L'):
      return data
    image = _eight_bits(image)
    if not self.size:
      return _encoded(image.convert('RGB'), 'JPEG', quality=JPEG_QUALITY, subsampling='4:4:4')
    image = centre_square(image.convert('L' if self.channels == 1 else 'RGB'))
    side = image.size[0]
    if side != self.size:
      image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
    return _encoded(image, 'PNG')


class FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes the splits of a checked folder in a stored form (see the module docstring)."""

  name = registry.IMAGE_FOLDER
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES: ClassVar[dict[str, str]] = {'1.0.0': 'Initial release.'}

  def __init__(self, folder, form: StoredForm, **kwargs):
    """``folder``: an ``image_folder.Folder``, checked."""
    self._folder, self._form = folder, form
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=f'The images of {self._folder.root}.',
        features=tfds.features.FeaturesDict({
            'image': self._form.feature(),
            'label': tfds.features.ClassLabel(names=self._folder.classes),
        }),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in self._folder.splits}

  def _generate_examples(self, split):
    problems = []
    for path, name in self._folder.paths(split):
      try:
        image = self._form.encode(path)
      except UNDECODABLE as error:
        problems.append(f'{path}: {error}')
        continue
      yield os.path.relpath(path, self._folder.root), {'image': image, 'label': name}
    refuse_undecodable(problems, 'a full decode')
