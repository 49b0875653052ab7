"""One entry per dataset: the facts every other module reads.

A dataset's entry says how many classes and channels it has, which image sizes a config may ask
for, its splits and their sizes, and its preprocessing family:

* ``SMALL`` (the paper's CIFAR-10 recipe): decoded and held in memory, padded and randomly
  cropped (``pad``) and flipped (``flip``), the per-pixel mean of the training split subtracted;
  the order of each epoch is a permutation, so a resume seeks straight to its step. These
  datasets can also live on the accelerators (``dataset.device_resident``).
* ``IMAGENET`` (the paper's ImageNet recipe): JPEG records streamed from disk, scale augmentation
  and PCA lighting for training, centre crops (or the paper's 10-crop and multi-scale views) for
  evaluation, the per-channel mean (or a per-pixel one) subtracted on the device.

Adding a dataset of either family is one entry here. A folder of one's own images
(``image_folder``, ``data.image_folder``) has no entry: its classes, channels and splits are read
from the folder, and ``folder_spec`` gives its facts at a ``dataset.image_size``. Nothing here
imports TensorFlow.
"""

import dataclasses

from resnet_jax.errors import ConfigError

SMALL = 'small'
IMAGENET = 'imagenet'


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """The facts of one tfds dataset that training and evaluation need."""
  name: str
  num_classes: int
  channels: int
  family: str                   # SMALL or IMAGENET.
  image_sizes: tuple[int, int]  # The smallest and largest ``dataset.image_size``.
  splits: dict[str, int]        # Split name -> number of examples.
  pad: int = 0                  # SMALL: pixels of zero padding on each side before a random crop.
  flip: bool = False            # SMALL: random horizontal flips.
  train_pixel_mean: bool = False  # IMAGENET: the train split's per-pixel mean, not ImageNet's.

  @property
  def in_memory(self) -> bool:
    """Decoded into memory (SMALL) rather than streamed from its records (IMAGENET)."""
    return self.family == SMALL

  @property
  def has_views(self) -> bool:
    """Whether the paper's 10-crop and multi-scale views apply: full-size images (IMAGENET)."""
    return self.family == IMAGENET


DATASETS = {spec.name: spec for spec in (
    # scikit-learn's 8x8 handwritten digits, upsampled; the bundled offline dataset.
    DatasetSpec('digits', num_classes=10, channels=1, family=SMALL, image_sizes=(8, 64),
                splits={'train': 1_500, 'test': 297}, pad=2, flip=False),
    # Random 32x32 crops of the padded 32x32 images.
    DatasetSpec('cifar10', num_classes=10, channels=3, family=SMALL, image_sizes=(32, 32),
                splits={'train': 50_000, 'test': 10_000}, pad=4, flip=True),
    # Crops of images resized to shorter side 256 (evaluation), so at most 256.
    DatasetSpec('imagenet2012', num_classes=1000, channels=3, family=IMAGENET,
                image_sizes=(32, 256), splits={'train': 1_281_167, 'validation': 50_000}),
)}


def get(name: str) -> DatasetSpec:
  """The entry of ``name``, or a ConfigError that lists the datasets there are."""
  if name not in DATASETS:
    raise ConfigError(f'dataset.name={name!r} is not a known dataset; use one of '
                      f'{", ".join(DATASETS)}.')
  return DATASETS[name]


# ROOT/<split>/<class>/*.jpg|*.png, read by data.image_folder. dataset.image_size chooses the
# family: small images up to FOLDER_SMALL_MAX_SIZE take CIFAR-10's recipe (pad an eighth of the
# side, flip), larger ones ImageNet's; both subtract the per-pixel mean of the train split.
IMAGE_FOLDER = 'image_folder'
FOLDER_IMAGE_SIZES = (8, 256)
FOLDER_SMALL_MAX_SIZE = 64


def folder_spec(image_size: int, num_classes: int, channels: int,
                splits: dict[str, int]) -> DatasetSpec:
  """The facts of an image folder of these classes, channels and splits at ``image_size``."""
  small = image_size <= FOLDER_SMALL_MAX_SIZE
  return DatasetSpec(IMAGE_FOLDER, num_classes=num_classes, channels=channels,
                     family=SMALL if small else IMAGENET, image_sizes=FOLDER_IMAGE_SIZES,
                     splits=splits, pad=max(1, image_size // 8) if small else 0, flip=small,
                     train_pixel_mean=not small)
