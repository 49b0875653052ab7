"""A folder of one's own images, ``ROOT/<split>/<class>/*.jpg|*.jpeg|*.png``, as a tfds dataset.

``--config.dataset.name=image_folder --config.dataset.data_dir=ROOT``. Every folder in ROOT is a
split and every folder in a split a class; the class names in sorted order are the labels, and
the classes of ``dataset.train_split`` are all there are (another split may lack one, never add
one). Hidden files and folders (``.DS_Store``) are skipped. ``dataset.image_size`` chooses the
recipe (``registry.folder_spec``): CIFAR-10's for small images, ImageNet's for large ones.

Checks, each a ``DataError`` that names the file or folder, before anything is compiled or
written to the workdir: the root and the named splits exist; no split or class folder is empty;
no split has a class the train split lacks; no file but .jpg, .jpeg and .png ones; every name is
UTF-8, and no class name holds a control character or surrounding spaces (tfds keeps the class
names one a line, stripped); every file can be read (no dangling symbolic link) and is an image,
first by its header (PIL reads the first bytes of every file), then by a full decode while the
folder is prepared. A preparation that fails leaves no folder behind.

Preparing. The splits are written once as a tfds dataset of TFRecord files, what both input paths
read (one image shape held in memory; JPEG records and their file instructions streamed), in
tfds' data directory (``TFDS_DATA_DIR``, else ~/tensorflow_datasets) under
``image_folder/<stored form>-<fingerprint>``. The fingerprint covers every file's path, size and
modification time, so a changed folder is prepared again and an unchanged one is only listed.
(``tfds.folder_dataset.ImageFolder`` decodes the original files on every read, with neither file
instructions nor sub-splits nor one image shape.) The stored form:

* small (SMALL): the centre square of each image resized to ``image_size`` (bilinear,
  antialiased; none where it already is that size), as PNG; greyscale if every image is, else RGB.
* large (IMAGENET): JPEG, RGB. RGB and greyscale JPEG files are kept byte for byte; others (PNG,
  CMYK) are converted to RGB and encoded at quality ``folder_builder.JPEG_QUALITY`` without
  chroma subsampling, as tfds' ImageNet builder converts its few PNG and CMYK files.

``folder_builder`` writes them. Both store 8 bits a sample: a 16-bit greyscale PNG is scaled to
them (v / 257, rounded), where PIL's own conversion would clip every value above 255.

The folder is read once per process; a change to it shows in the next run.
"""

import contextlib
import dataclasses
import functools
import hashlib
import os
import re
import tempfile
import unicodedata

import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from resnet_jax.data import folder_builder, registry
from resnet_jax.errors import ConfigError, DataError

EXTENSIONS = ('.jpg', '.jpeg', '.png')  # Those of tfds.folder_dataset.ImageFolder.
GREYSCALE_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'F')
# Characters a class name cannot hold: tfds writes the names one a line (label.labels.txt), so a
# line break splits one in two; other control characters are refused with them.
CONTROL_CATEGORIES = ('Cc', 'Zl', 'Zp')
SPLIT_NAME = re.compile(r'[\w-]+')  # What a tfds split name may hold.
LAYOUT = 'ROOT/train/<class>/*.jpg|*.png and ROOT/test/<class>/...'


@dataclasses.dataclass(frozen=True)
class Folder:
  """The files of an image folder: split -> class -> ((file name, size, mtime_ns), ...)."""
  root: str
  splits: dict[str, dict[str, tuple[tuple[str, int, int], ...]]]

  @property
  def classes(self) -> list[str]:
    """Every class of every split, sorted: the label names."""
    return sorted({name for classes in self.splits.values() for name in classes})

  def paths(self, split: str):
    """(path, class name) of every file of a split, by class and file name."""
    for name, files in self.splits[split].items():
      for file, _, _ in files:
        yield os.path.join(self.root, split, name, file), name


def _visible(path: str) -> list[os.DirEntry]:
  """The entries of a directory that are not hidden, by name."""
  with os.scandir(path) as entries:
    return sorted((e for e in entries if not e.name.startswith('.')), key=lambda e: e.name)


def _shown(path: str) -> str:
  """``path`` as a message shows it: bytes that are not UTF-8 as \\xNN, control characters
  escaped."""
  text = os.fsencode(path).decode('utf-8', 'backslashreplace')
  return ''.join(c.encode('unicode_escape').decode() if unicodedata.category(c)
                 in CONTROL_CATEGORIES else c for c in text)


def _check_utf8(path: str) -> None:
  """Refuses a file or folder whose name is not UTF-8: tfds keeps names as text."""
  try:
    path.encode('utf-8')
  except UnicodeEncodeError:
    raise DataError(f'The name of {_shown(path)} is not valid UTF-8 (its other bytes shown as '
                    '\\xNN), and the prepared dataset keeps names as text: rename it in UTF-8 '
                    '(convmv -f latin1 -t utf-8 converts names from Latin-1).') from None


def _check_class_name(path: str) -> None:
  """Refuses a class folder whose name the labels file cannot keep (``CONTROL_CATEGORIES``)."""
  _check_utf8(path)
  name = os.path.basename(path)
  if name != name.strip() or any(unicodedata.category(c) in CONTROL_CATEGORIES for c in name):
    raise DataError(f'The class folder {_shown(path)} has a line break, another control '
                    'character or surrounding spaces in its name; tfds writes the class names '
                    'one a line, stripped, so its label would be lost or split in two. Rename '
                    'the folder.')


def _stat(entry: os.DirEntry) -> os.stat_result:
  """The file's status; refuses a file that cannot be read, such as a dangling symbolic link."""
  try:
    return entry.stat()
  except OSError as error:
    link = f' (a symbolic link to {os.readlink(entry.path)})' if entry.is_symlink() else ''
    raise DataError(f'{_shown(entry.path)}{link} cannot be read ({error.strerror}): restore the '
                    'file it names, or remove it.') from None


def _class_files(path: str) -> tuple[tuple[str, int, int], ...]:
  """(name, size, mtime_ns) of the images of a class folder; refuses what is not one."""
  files = []
  for entry in _visible(path):
    _check_utf8(entry.path)
    if entry.is_dir() or not entry.name.lower().endswith(EXTENSIONS):
      raise DataError(f'{entry.path} is not a .jpg, .jpeg or .png file; a class folder holds only '
                      f'images: move it out of the image folder or remove it.')
    stat = _stat(entry)
    files.append((entry.name, stat.st_size, stat.st_mtime_ns))
  if not files:
    raise DataError(f'The class folder {path} holds no images; add its images or remove it.')
  return tuple(files)


@functools.cache
def read(root: str) -> Folder:
  """The splits, classes and files of the folder ``root``, its layout checked (no file opened)."""
  if not os.path.isdir(root):
    raise DataError(f'The image folder {root} (dataset.data_dir) does not exist or is not a '
                    f'folder; point --config.dataset.data_dir at a folder laid out as {LAYOUT}.')
  splits = {}
  for split in (e for e in _visible(root) if e.is_dir()):
    if not SPLIT_NAME.fullmatch(split.name):
      raise DataError(f'The split folder {_shown(split.path)} has a name tfds cannot address; '
                      'rename it with letters, digits, _ and - only.')
    classes = {}
    for entry in _visible(split.path):
      if not entry.is_dir():
        raise DataError(f'{_shown(entry.path)} is not in a class folder; images go in '
                        f'{split.path}/<class>/: move it into its class folder or remove it.')
      _check_class_name(entry.path)
      classes[entry.name] = _class_files(entry.path)
    if not classes:
      raise DataError(f'The split folder {split.path} holds no class folders; add '
                      f'{split.path}/<class>/ folders of images or remove it.')
    splits[split.name] = classes
  if not splits:
    raise DataError(f'The image folder {root} holds no split folders; lay it out as {LAYOUT}.')
  return Folder(root, splits)


def check_splits(root: str, train_split: str, eval_split: str) -> None:
  """Refuses a named split that is not a folder of ``root``, and a class of any split that the
  train split lacks. Splits may be tfds expressions of split names (``train[:90%]+val``)."""
  folder = read(_root(root))
  for field, expression in (('train_split', train_split), ('eval_split', eval_split)):
    for name in _split_names(expression):
      if name not in folder.splits:
        raise DataError(f'dataset.{field}={expression!r} names the split {name!r}, but '
                        f'{os.path.join(folder.root, name)} does not exist; its splits are '
                        f'{", ".join(folder.splits)}. Add the folder or set '
                        f'--config.dataset.{field} to one of them.')
  train_names = _split_names(train_split)
  train_classes = {c for name in train_names for c in folder.splits[name]}
  for split, classes in folder.splits.items():
    extra = [os.path.join(folder.root, split, c) for c in classes if c not in train_classes]
    if extra:
      raise DataError(f'{", ".join(extra)}: a class that the train split '
                      f'({", ".join(os.path.join(folder.root, n) for n in train_names)}) lacks; '
                      'the train split defines the classes. Add its training images under the '
                      'train split or remove the folder.')


def _split_names(expression: str) -> list[str]:
  """The split names of a tfds split expression, e.g. 'train[:90%]+val' -> ['train', 'val']."""
  return [part.split('[')[0].strip() for part in expression.split('+')]


def _headers(folder: Folder) -> tuple[set[str], list[int]]:
  """The PIL modes of every file and each one's shorter side, read from their headers; refuses a
  file that is not an image."""
  modes, sides, problems = set(), [], []
  for split in folder.splits:
    for path, _ in folder.paths(split):
      try:
        with Image.open(path) as image:
          modes.add(image.mode)
          sides.append(min(image.size))
      except folder_builder.UNDECODABLE as error:
        problems.append(f'{path}: {error}')
  folder_builder.refuse_undecodable(problems, 'their headers')
  return modes, sides


# Shrinking a folder's images by more than this (their median shorter side over image_size)
# draws a warning: photographs trained as thumbnails, most likely a forgotten image_size.
MAX_SILENT_SHRINK = 4


def _warn_if_shrunk(folder: Folder, image_size: int, sides: list[int]) -> None:
  """Warns where the stored copy shrinks the median image more than ``MAX_SILENT_SHRINK`` times."""
  median = sorted(sides)[len(sides) // 2]
  if image_size <= registry.SMALL_MAX_SIDE and median > MAX_SILENT_SHRINK * image_size:
    logging.warning(
        'The images of %s are %d pixels on their shorter side (median), and '
        'dataset.image_size=%d shrinks them %.0fx to %dx%d: set --config.dataset.image_size to '
        "the size to train at (up to %d: CIFAR-10's recipe, on a copy stored at that size; "
        "above: ImageNet's, on the original JPEGs).", folder.root, median, image_size,
        median / image_size, image_size, image_size, registry.SMALL_MAX_SIDE)


def _fingerprint(folder: Folder, form_name: str) -> str:
  """16 hex digits of the stored form and of every file's path, size and modification time."""
  digest = hashlib.sha256(form_name.encode())
  for split, classes in folder.splits.items():
    for name, files in classes.items():
      for file, size, mtime in files:
        digest.update(f'{split}/{name}/{file}\0{size}\0{mtime}\n'.encode())
  return digest.hexdigest()[:16]


def _root(root: str) -> str:
  return os.path.abspath(os.path.expanduser(root))


def _form_name(image_size: int) -> str:
  """The stored form's name: small images as PNG at their size, large ones as JPEG."""
  return f'png{image_size}' if image_size <= registry.SMALL_MAX_SIDE else 'jpeg'


def _prepared_path(folder: Folder, image_size: int) -> str:
  """Where tfds' data directory holds the folder prepared for ``image_size``."""
  form_name = _form_name(image_size)
  return os.path.join(tfds.core.constants.get_default_data_dir(), registry.IMAGE_FOLDER,
                      f'{form_name}-{_fingerprint(folder, form_name)}',
                      str(folder_builder.FolderBuilder.VERSION))


def _is_prepared(path: str) -> bool:
  return os.path.exists(os.path.join(path, 'dataset_info.json'))


def _channels(modes: set[str], image_size: int) -> int:
  """The channels of the stored form: small images greyscale if every file is, else RGB."""
  small = image_size <= registry.SMALL_MAX_SIDE
  return 1 if small and modes <= set(GREYSCALE_MODES) else 3


@functools.cache
def prepare(root: str, image_size: int):
  """The tfds builder of the folder ``root`` prepared for ``image_size``: written once to tfds'
  data directory (module docstring), read from there after."""
  folder = read(_root(root))
  path = _prepared_path(folder, image_size)
  if not _is_prepared(path):
    size = image_size if image_size <= registry.SMALL_MAX_SIDE else None
    modes, sides = _headers(folder)
    _warn_if_shrunk(folder, image_size, sides)
    form = folder_builder.StoredForm(size, _channels(modes, image_size))
    config = tfds.core.BuilderConfig(name=os.path.basename(os.path.dirname(path)))
    data_dir = tfds.core.constants.get_default_data_dir()
    logging.info('Preparing the image folder %s (%d classes) in %s.', folder.root,
                 len(folder.classes), path)
    made = [path, os.path.dirname(path), os.path.dirname(os.path.dirname(path)), data_dir]
    try:
      with _removed_if_left_empty(made), tempfile.TemporaryDirectory() as downloads:
        folder_builder.FolderBuilder(folder, form, data_dir=data_dir,
                                     config=config).download_and_prepare(download_dir=downloads)
    except OSError:
      if not _is_prepared(path):
        raise
      # Another process (of this run, or another run of the folder) finished the same copy first.
  return tfds.builder_from_directory(path)


@contextlib.contextmanager
def _removed_if_left_empty(directories: list[str]):
  """On an error, removes those of ``directories`` (listed deepest first) that did not exist
  before and are empty: a failed preparation leaves no folder behind."""
  new = [d for d in directories if not os.path.exists(d)]
  try:
    yield
  except BaseException:
    for directory in new:
      with contextlib.suppress(OSError):  # Not empty: another process is preparing there.
        os.rmdir(directory)
    raise


def spec(dataset) -> registry.DatasetSpec:
  """The facts of the folder ``dataset.data_dir`` (a config's ``dataset``) at
  ``dataset.image_size``: its layout and splits checked, nothing written (``prepare`` writes)."""
  if not dataset.data_dir:
    raise ConfigError(f'dataset.name={registry.IMAGE_FOLDER} reads the folder dataset.data_dir: '
                      f'set --config.dataset.data_dir=ROOT, where {LAYOUT} hold the images.')
  low, high = registry.FOLDER_IMAGE_SIZES
  if not low <= dataset.image_size <= high:
    raise ConfigError(f'dataset.image_size={dataset.image_size} does not fit an image folder: '
                      f'use {low} to {high} pixels (up to {registry.SMALL_MAX_SIDE}: CIFAR-10\'s '
                      "recipe; above: ImageNet's).")
  check_splits(dataset.data_dir, dataset.train_split, dataset.eval_split)
  folder = read(_root(dataset.data_dir))
  path = _prepared_path(folder, dataset.image_size)
  channels = (tfds.builder_from_directory(path).info.features['image'].shape[-1]
              if _is_prepared(path) else _channels(_headers(folder)[0], dataset.image_size))
  return registry.folder_spec(
      dataset.image_size, num_classes=len(folder.classes), channels=channels,
      splits={split: sum(len(files) for files in classes.values())
              for split, classes in folder.splits.items()},
      prepared_dir=path)
