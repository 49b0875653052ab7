"""dataset.name=image_folder: folders of real images (scikit-learn's digits as PNG files, crops of
its photographs as JPEG and PNG files) read exactly, trained through main.py, and bad folders
refused with a message naming the file or folder before the workdir is touched."""

import collections
import glob
import io
import os
from typing import NamedTuple

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

from configs import digits as digits_config
from resnet_jax import errors, events, train
from resnet_jax.data import digits as digits_dataset
from resnet_jax.data import image_folder
from resnet_jax.errors import ConfigError, DataError
from resnet_jax.testing import image_folders
from tests.harness import run_main, tiny_digits_config


@pytest.fixture(scope='module')
def prepared_dir(tmp_path_factory):
  """tfds' data directory for this module's prepared folders (TFDS_DATA_DIR, read per call)."""
  path = str(tmp_path_factory.mktemp('prepared'))
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('TFDS_DATA_DIR', path)
    yield path


def stored_examples(builder, split):
  """Multiset of (image bytes, label) of a prepared split."""
  images, labels = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1,
                                                    as_supervised=True))
  return collections.Counter((image.tobytes(), int(label)) for image, label in zip(images, labels))


def test_digits_5_to_9_are_stored_exactly_with_sorted_labels(prepared_dir, tmp_path):
  root = image_folders.write_digits(str(tmp_path / 'five_to_nine'), classes=range(5, 10))
  builder = image_folder.prepare(root, image_size=8)  # The files' size: stored unresampled.
  assert builder.info.features['label'].names == ['5', '6', '7', '8', '9']
  assert builder.info.features['image'].shape == (8, 8, 1)
  assert os.fspath(builder.data_path).startswith(prepared_dir)
  digits = load_digits()
  pixels = digits_dataset.to_uint8(digits.images)
  for split, indices in digits_dataset.split_indices().items():
    expected = collections.Counter((pixels[i].tobytes(), int(digits.target[i]) - 5)
                                   for i in indices if digits.target[i] >= 5)
    assert stored_examples(builder, split) == expected


@pytest.mark.parametrize('image_size, warned', [(16, True), (32, False), (96, False)])
def test_photographs_shrunk_more_than_4x_draw_a_warning_naming_image_size(
    image_size, warned, prepared_dir, tmp_path, caplog):
  # 100x100 photographs: 16 pixels shrinks them 6x, 32 pixels 3x; 96 keeps the JPEGs.
  root = image_folders.write_photos(str(tmp_path / 'photos'), image_size=100,
                                    counts=(('train', 3),))
  image_folder.prepare(root, image_size=image_size)
  warnings = [r.getMessage() for r in caplog.records
              if r.levelname == 'WARNING' and r.pathname.endswith('image_folder.py')]
  expected = (f'The images of {root} are 100 pixels on their shorter side (median), and '
              'dataset.image_size=16 shrinks them 6x to 16x16: set --config.dataset.image_size')
  assert [w.startswith(expected) for w in warnings] == ([True] if warned else [])


def test_large_images_are_stored_as_their_jpeg_files_and_pngs_as_close_jpegs(prepared_dir,
                                                                             tmp_path):
  root = image_folders.write_photos(str(tmp_path / 'photos'), image_size=100,
                                    counts=(('train', 2),), extensions=('jpg', 'png'))
  builder = image_folder.prepare(root, image_size=96)
  names = builder.info.features['label'].names
  assert names == ['china', 'flower']
  kinds = collections.defaultdict(list)
  for data, label in tfds.as_numpy(builder.as_dataset(
      split='train', as_supervised=True, decoders={'image': tfds.decode.SkipDecoding()})):
    folder = os.path.join(root, 'train', names[label])
    with open(os.path.join(folder, '0.jpg'), 'rb') as f:
      if data == f.read():
        kinds[label].append('jpg')
        continue
    stored = np.asarray(Image.open(io.BytesIO(data)), np.float64)
    assert Image.open(io.BytesIO(data)).format == 'JPEG'
    assert np.abs(stored - np.asarray(Image.open(os.path.join(folder, '1.png')))).mean() < 3
    kinds[label].append('png')
  assert {label: sorted(k) for label, k in kinds.items()} == {0: ['jpg', 'png'],
                                                              1: ['jpg', 'png']}


def sixteen_bit_gradient_png(side=64) -> tuple[bytes, np.ndarray]:
  """A greyscale PNG of 16 bits a sample from 0 to 65535, written by PIL, and its values."""
  values = np.linspace(0, 65535, side * side).round().astype(np.uint16).reshape(side, side)
  buffer = io.BytesIO()
  Image.fromarray(values).save(buffer, format='PNG')
  assert Image.open(buffer).mode == 'I;16'
  return buffer.getvalue(), values


@pytest.mark.parametrize('image_size, tolerance', [(64, 0), (96, 1.0)])  # PNG; JPEG (lossy).
def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(image_size, tolerance, tmp_path,
                                                     monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'prepared'))
  gradient, values = sixteen_bit_gradient_png()
  root = str(tmp_path / 'images')
  write(root, {'train/a/0.png': gradient, 'train/b/0.png': png(), 'test/a/0.png': png()})
  (image, _), = [example for example in tfds.as_numpy(image_folder.prepare(
      root, image_size).as_dataset(split='train', as_supervised=True)) if example[1] == 0]
  expected = np.round(values / 257)  # 0..65535 onto 0..255, as the PNG standard scales depths.
  assert (expected.min(), expected.max()) == (0, 255)
  for channel in range(image.shape[-1]):
    assert np.abs(image[..., channel] - expected).mean() <= tolerance


def final_eval(workdir):
  steps, values = events.read_scalars(workdir)['eval_error_top1']
  return float(values[np.argmax(steps)])


@pytest.mark.e2e
def test_digits_folder_trains_through_main(prepared_dir, tmp_path):
  """The quickstart recipe on the digits folder at 16x16 for 60 steps: a test error under 10%
  (the measured one: docs/datasets.md)."""
  digits_root = image_folders.write_digits(str(tmp_path / 'digits'))
  workdir = str(tmp_path / 'run')
  run_main(workdir, 'configs/digits.py', [
      '--config.dataset.name=image_folder', f'--config.dataset.data_dir={digits_root}',
      '--config.total_epochs=0', '--config.total_steps=60', '--config.eval_every_steps=60',
      '--config.checkpoint_every_steps=60', '--config.log_every_steps=60',
      '--config.optimizer.lr_boundaries=(45,)', '--config.optimizer.lr_boundaries_unit=steps'],
      env={'TFDS_DATA_DIR': prepared_dir})
  assert final_eval(workdir) < 0.10
  assert glob.glob(os.path.join(prepared_dir, 'image_folder', 'png16-*', '*', 'dataset_info.json'))


@pytest.mark.e2e
def test_photo_folder_trains_through_main(prepared_dir, tmp_path):
  """Large images (the ImageNet recipe: streamed JPEG records, the train split's per-pixel mean)
  at 72x72 for 40 steps: crops of the two photographs, a quarter of them PNG files, told apart
  with a test error of at most 10% (the measured one: docs/datasets.md)."""
  root = image_folders.write_photos(str(tmp_path / 'photos'), image_size=128,
                                    counts=(('train', 24), ('test', 32)),
                                    extensions=('jpg', 'jpg', 'jpg', 'png'))
  workdir = str(tmp_path / 'run')
  run_main(workdir, 'configs/digits.py', [
      '--config.dataset.name=image_folder', f'--config.dataset.data_dir={root}',
      '--config.dataset.image_size=72', '--config.batch_size=16', '--config.eval_batch_size=64',
      '--config.total_epochs=0', '--config.total_steps=40', '--config.eval_every_steps=40',
      '--config.checkpoint_every_steps=40', '--config.log_every_steps=40',
      '--config.optimizer.learning_rate=0.02', '--config.optimizer.lr_boundaries=(30,)',
      '--config.optimizer.lr_boundaries_unit=steps'], env={'TFDS_DATA_DIR': prepared_dir})
  assert final_eval(workdir) <= 0.10
  assert glob.glob(os.path.join(prepared_dir, 'image_folder', 'jpeg-*', '*', 'dataset_info.json'))


def test_another_split_of_the_folder_is_evaluated_beside_the_test_split(tmp_path, monkeypatch):
  """extra_evals naming the folder itself: its 'val' split scored under 'val/' at each
  evaluation, on its own 3 images."""
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'prepared'))
  root, workdir = str(tmp_path / 'images'), str(tmp_path / 'run')
  write(root, {**GOOD, 'val/a/0.png': png(20), 'val/b/0.png': png(230), 'val/b/1.png': png(220)})
  train.train_and_evaluate(tiny_digits_config(root, **{
      'dataset.name': 'image_folder', 'dataset.image_size': 8, 'batch_size': 2,
      'eval_batch_size': 4, 'total_steps': 2, 'eval_every_steps': 1, 'checkpoint_every_steps': 2,
      'optimizer.lr_boundaries': (2,), 'extra_evals': ('val=image_folder:val',)}), workdir)
  scalars = events.read_scalars(workdir)
  for tag in ('eval_error_top1', 'val/error_top1'):
    steps, errors_top1 = scalars[tag]
    assert list(steps) == [1, 2]
    # Two classes, so every error is a count of wrong images: of 2 test, of 3 val images.
    images = 3 if tag.startswith('val/') else 2
    assert all(float(e) * images == pytest.approx(round(float(e) * images)) for e in errors_top1)
  assert set(scalars) >= {'val/loss', 'val/error_top5'}


# ---------------------------------------------------------------------------------------------
# Bad folders.


def png(value=0, size=8):
  buffer = io.BytesIO()
  Image.fromarray(np.full((size, size), value, np.uint8)).save(buffer, format='PNG')
  return buffer.getvalue()


def half_a_jpeg():
  buffer = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
      buffer, format='JPEG')
  return buffer.getvalue()[:buffer.tell() // 2]


class Link(NamedTuple):
  """A symbolic link to ``target``, as a file of a folder ``write`` writes."""
  target: str


GOOD = {'train/a/0.png': png(0), 'train/a/1.png': png(10), 'train/b/0.png': png(200),
        'train/b/1.png': png(250), 'test/a/0.png': png(5), 'test/b/0.png': png(240)}

# (id, files added to GOOD (None: removed), config overrides, error, words of the message).
BAD_FOLDERS = [
    ('no_root', None, {}, DataError, ['{root}', 'does not exist']),
    ('no_data_dir', {}, {'data_dir': None}, ConfigError, ['--config.dataset.data_dir=ROOT']),
    ('no_test_split', {'test/a/0.png': None, 'test/b/0.png': None}, {}, DataError,
     ["{root}/test does not exist", 'splits are train']),
    ('no_such_train_split', {}, {'train_split': 'training'}, DataError,
     ['{root}/training does not exist', '--config.dataset.train_split']),
    ('empty_class', {'train/c/': b''}, {}, DataError, ['{root}/train/c holds no images']),
    ('class_only_in_test', {'test/c/0.png': png()}, {}, DataError,
     ['{root}/test/c: a class that the train split ({root}/train) lacks']),
    ('not_an_image', {'train/b/2.png': b'<html>not found</html>'}, {}, DataError,
     ['{root}/train/b/2.png', 'not decodable', 'headers']),
    ('truncated_image', {'test/a/1.jpg': half_a_jpeg()}, {}, DataError,
     ['{root}/test/a/1.jpg', 'not decodable', 'full decode']),
    ('other_file', {'train/a/notes.txt': b'x'}, {}, DataError,
     ['{root}/train/a/notes.txt is not a .jpg, .jpeg or .png file']),
    ('image_outside_classes', {'train/2.png': png()}, {}, DataError,
     ['{root}/train/2.png is not in a class folder']),
    ('line_break_in_class_name', {'train/c\nd/0.png': png()}, {}, DataError,
     ['The class folder {root}/train/c\\nd has a line break', 'Rename the folder']),
    ('space_around_class_name', {'train/b /0.png': png()}, {}, DataError,
     ['The class folder {root}/train/b  has a line break, another control character or '
      'surrounding spaces']),
    ('file_name_not_utf8', {'train/a/\udcff.png': png()}, {}, DataError,
     ['The name of {root}/train/a/\\xff.png is not valid UTF-8', 'rename it in UTF-8']),
    ('class_name_not_utf8', {'test/\udce9t\udce9/0.png': png()}, {}, DataError,
     ['The name of {root}/test/\\xe9t\\xe9 is not valid UTF-8']),
    ('dangling_symlink', {'train/b/2.png': Link('/nonexistent/2.png')}, {}, DataError,
     ['{root}/train/b/2.png (a symbolic link to /nonexistent/2.png) cannot be read (No such '
      'file or directory)']),
]


def write(root, files):
  for name, data in files.items():
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, Link):
      os.symlink(data.target, path)
    elif data is not None and not name.endswith('/'):
      with open(path, 'wb') as f:
        f.write(data)


def folder_config(root, **overrides):
  config = digits_config.get_config()
  config.dataset.update({'name': 'image_folder', 'data_dir': root, **overrides})
  config.batch_size = config.eval_batch_size = 4  # The good folder's train split: 4 images.
  return config


@pytest.mark.parametrize('case', BAD_FOLDERS, ids=[case[0] for case in BAD_FOLDERS])
def test_bad_folder_is_refused_before_the_workdir_is_touched(case, tmp_path, monkeypatch):
  _, changes, overrides, error, words = case
  root, workdir, prepared = (str(tmp_path / name) for name in ('images', 'run', 'prepared'))
  monkeypatch.setenv('TFDS_DATA_DIR', prepared)
  if changes is not None:
    write(root, {name: data for name, data in {**GOOD, **changes}.items() if data is not None})
  with pytest.raises(error) as refusal:
    train.train_and_evaluate(folder_config(root, **overrides), workdir)
  for word in words:
    assert word.format(root=root) in str(refusal.value)
  assert not os.path.exists(workdir)
  assert not os.path.exists(prepared)  # No prepared copy, not even an empty folder.


@pytest.mark.e2e
def test_a_name_that_is_not_utf8_ends_main_with_its_message_and_status_2(tmp_path):
  root, workdir = str(tmp_path / 'images'), str(tmp_path / 'run')
  write(root, {**GOOD, 'train/a/\udcff.png': png()})
  result = run_main(workdir, 'configs/digits.py', [
      '--config.dataset.name=image_folder', f'--config.dataset.data_dir={root}'], check=False,
      env={'TFDS_DATA_DIR': str(tmp_path / 'prepared')})
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1] == (
      f'DataError: The name of {root}/train/a/\\xff.png is not valid UTF-8 (its other bytes '
      'shown as \\xNN), and the prepared dataset keeps names as text: rename it in UTF-8 (convmv '
      '-f latin1 -t utf-8 converts names from Latin-1).')
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(workdir) and not os.path.exists(tmp_path / 'prepared')


def test_large_images_are_not_held_on_the_devices(tmp_path, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'prepared'))
  write(str(tmp_path / 'images'), GOOD)
  config = folder_config(str(tmp_path / 'images'), image_size=96, device_resident=True)
  with pytest.raises(ConfigError, match='image_folder at dataset.image_size <= 64'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_a_bad_folder_ends_a_command_with_its_message_and_status_2(tmp_path, capsys,
                                                                   monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'prepared'))
  root = str(tmp_path / 'images')
  write(root, {**GOOD, 'test/c/0.png': png()})
  with pytest.raises(SystemExit) as status, errors.exit_on_user_error():
    train.train_and_evaluate(folder_config(root), str(tmp_path / 'run'))
  assert status.value.code == 2
  assert capsys.readouterr().err.startswith(f'DataError: {root}/test/c: a class that the train')
