"""Real photographs at ImageNet's typical sizes, for the input benchmark: no download needed.

scikit-learn ships two 640x427 photographs (``sklearn.datasets.load_sample_images``). Random
windows of them (at least half of each side, aspect ratio between 3:4 and 4:3, either way
round) are resized so that the longer side is 400-500 pixels and encoded as baseline JPEGs at
quality 90-95 with 4:2:0 chroma subsampling, as most of ImageNet's training images are.
"""

import io

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

LONGER_SIDE = (400, 500)
QUALITY = (90, 95)


def sample_jpegs(count: int, seed: int = 0) -> list[bytes]:
  """``count`` JPEG files (bytes) cut from scikit-learn's sample photographs."""
  rng = np.random.default_rng(seed)
  sources = load_sample_images().images
  jpegs = []
  for i in range(count):
    source = sources[i % len(sources)]
    height, width = source.shape[:2]
    crop_h = int(rng.integers(height // 2, height + 1))
    aspect = rng.uniform(3 / 4, 4 / 3)
    crop_w = min(width, int(round(crop_h * aspect)))
    y = int(rng.integers(0, height - crop_h + 1))
    x = int(rng.integers(0, width - crop_w + 1))
    window = Image.fromarray(source[y:y + crop_h, x:x + crop_w])
    longer = int(rng.integers(LONGER_SIDE[0], LONGER_SIDE[1] + 1))
    scale = longer / max(crop_h, crop_w)
    size = (max(1, round(crop_w * scale)), max(1, round(crop_h * scale)))
    buffer = io.BytesIO()
    window.resize(size, Image.BICUBIC).save(
        buffer, format='JPEG', quality=int(rng.integers(QUALITY[0], QUALITY[1] + 1)),
        subsampling='4:2:0')
    jpegs.append(buffer.getvalue())
  return jpegs
