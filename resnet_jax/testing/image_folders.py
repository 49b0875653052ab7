"""Image folders written from real images, ``ROOT/<split>/<class>/<n>.<ext>``, with no download.

* ``write_digits``: scikit-learn's handwritten digits of the given classes as greyscale PNG
  files, class folders ``'0'`` to ``'9'``, split as the bundled ``digits`` dataset splits them.
* ``write_photos``: square crops of scikit-learn's two photographs, class folders ``'china'`` and
  ``'flower'`` (the photograph a crop is cut from), as JPEG (or PNG) files.
"""

import os

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

from resnet_jax.data import digits as digits_dataset

PHOTO_CLASSES = ('china', 'flower')
CROP_SIDES = (0.5, 1.0)  # A crop's side, as a fraction of the photograph's shorter side.


def _save(image: Image.Image, path: str, extension: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path, **({'quality': 90} if extension == 'jpg' else {}))


def write_digits(root: str, classes=range(10), image_size: int = 8) -> str:
  """Writes ``root/{train,test}/<digit>/<index>.png`` for the digits in ``classes``: 8x8 pixels
  scaled to 0..255 (``digits.to_uint8``), resized bilinearly to ``image_size``; ``index`` is the
  image's position in ``load_digits()``. Returns ``root``."""
  digits = load_digits()
  images = digits_dataset.to_uint8(digits.images)
  for split, indices in digits_dataset.split_indices().items():
    for i in indices:
      if digits.target[i] in classes:
        image = Image.fromarray(images[i])
        if image_size != image.width:
          image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        _save(image, os.path.join(root, split, str(digits.target[i]), f'{i}.png'), 'png')
  return root


def write_photos(root: str, classes=PHOTO_CLASSES, image_size: int = 224,
                 counts=(('train', 24), ('test', 8)), extensions=('jpg',), seed: int = 0) -> str:
  """Writes ``count`` crops per class and split, ``root/<split>/<photograph>/<n>.<ext>``: random
  square windows of the photograph (half to all of its shorter side wide) resized to
  ``image_size`` (bicubic), the n-th saved with ``extensions[n % len(extensions)]`` ('jpg' at
  quality 90, or 'png'). Returns ``root``."""
  rng = np.random.default_rng(seed)
  photos = load_sample_images()
  for photo, path in zip(photos.images, photos.filenames):
    name = os.path.splitext(os.path.basename(path))[0]
    if name not in classes:
      continue
    height, width = photo.shape[:2]
    for split, count in counts:
      for n in range(count):
        side = int(rng.uniform(*CROP_SIDES) * min(height, width))
        y, x = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(photo[y:y + side, x:x + side]).resize(
            (image_size, image_size), Image.Resampling.BICUBIC)
        extension = extensions[n % len(extensions)]
        _save(crop, os.path.join(root, split, name, f'{n}.{extension}'), extension)
  return root
