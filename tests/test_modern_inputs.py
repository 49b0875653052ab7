"""The modern input augmentations in the input paths: the paper's batches unchanged, the parts
wired where the config asks (against PIL + torchvision and hand computations), the data order
and determinism kept, and the combinations a path cannot run refused before any work."""

import hashlib
import io
import json

import jax
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from benchmarks import torch_input
from configs import digits, imagenet
from resnet_jax import events, run_plan, train
from resnet_jax.data import augmentation, config_checks, datasets, device_resident
from resnet_jax.data import imagenet as imagenet_preprocessing
from resnet_jax.data import registry
from resnet_jax.errors import ConfigError
from resnet_jax.testing import photos, tfrecord_imagenet
from tests.harness import tiny_digits_config
from tests.test_train_mock_data import short, twenty_examples

torchvision = torch_input.import_torchvision()

# sha256 (first 16 hex digits) of the default configs' first batches, recorded with the code
# before the modern augmentations existed (commit 4974095): the paper's recipe, bit for bit.
PAPER_DIGESTS = {'imagenet train': '2a412bf0d181a61f', 'imagenet eval': 'b528935423c32bb7',
                 'digits train': '44b8c5438019de93', 'device_resident': '0de56032e8fd0156'}
MODERN = dict(train_crop='random_resized', auto_augment='trivial_augment_wide',
              random_erasing=0.5, pca_lighting=False)


def digest(batches):
  h = hashlib.sha256()
  for batch in batches:
    for key in sorted(batch):
      h.update(np.ascontiguousarray(batch[key]).tobytes())
  return h.hexdigest()[:16]


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


@pytest.fixture(scope='module')
def imagenet_dir(tmp_path_factory):
  """A tiny imagenet2012 of 8 real photographs in each split."""
  data_dir = str(tmp_path_factory.mktemp('imagenet'))
  jpegs = photos.sample_jpegs(8)
  tfrecord_imagenet.prepare(data_dir, {'train': (jpegs, range(8)),
                                       'validation': (jpegs, range(8))}, num_files=2)
  return data_dir


def imagenet_config(data_dir, **dataset):
  config = imagenet.get_config('resnet18')
  config.dataset.data_dir = data_dir
  config.dataset.image_size = 64
  config.model.bn_group_size = 0
  config.batch_size, config.eval_batch_size = 4, 8
  config.dataset.update(dataset)
  return config


def digits_config(data_dir, **dataset):
  config = digits.get_config()
  config.dataset.data_dir = data_dir
  config.batch_size = 16
  config.dataset.update(dataset)
  return config


def test_the_default_configs_batches_are_the_papers_bit_for_bit(imagenet_dir, tmp_path):
  data = datasets.open_config(imagenet_config(imagenet_dir))
  found = {'imagenet train': digest(take(data.train_batches(0), 3)),
           'imagenet eval': digest(list(data.eval_split()))}
  data = datasets.open_config(digits_config(str(tmp_path)))
  found['digits train'] = digest(take(data.train_batches(0), 3))
  images, labels = data.train_arrays()
  batch = device_resident.train_batch({'image': images, 'label': labels}, 5, seed=0,
                                      batch_size=16, steps_per_epoch=10, pad=2, flip=True)
  found['device_resident'] = digest([{k: np.asarray(v) for k, v in batch.items()}])
  assert found == PAPER_DIGESTS


def test_streamed_modern_batches_keep_the_order_and_resume_exactly(imagenet_dir):
  paper = take(datasets.open_config(imagenet_config(imagenet_dir)).train_batches(0), 4)
  config = imagenet_config(imagenet_dir, **MODERN, eval_resize=80, eval_crop=72)
  modern = take(datasets.open_config(config).train_batches(0), 4)
  resumed = next(datasets.open_config(config).train_batches(3))
  for ours, theirs in zip(modern, paper):
    np.testing.assert_array_equal(ours['label'], theirs['label'])  # The same examples.
    assert ours['image'].shape == (4, 64, 64, 3) and ours['image'].dtype == np.uint8
    assert not np.array_equal(ours['image'], theirs['image'])
    # No PCA lighting: the offset is minus the ImageNet mean.
    np.testing.assert_allclose(ours['image_offset'],
                               np.tile(-np.float32(imagenet_preprocessing.IMAGENET_RGB_MEAN),
                                       (4, 1)))
  np.testing.assert_array_equal(resumed['image'], modern[3]['image'])
  evals = list(datasets.open_config(config).eval_split())
  assert evals[0]['image'].shape == (8, 72, 72, 3)


def test_eval_centre_window_at_another_shorter_side_by_hand():
  # Shorter side 300 at 232: crop 300 * 224 / 232 = 289.66 -> 290, centred.
  window = imagenet_preprocessing.centre_window(tf.constant([300, 400, 3]), 224, 232).numpy()
  np.testing.assert_array_equal(window, [5, 55, 290, 290])


@pytest.mark.parametrize('encoding, tolerance', [('png', 4.0), ('jpeg', 12.0)])
def test_random_resized_crop_resizes_its_window_as_torchvision_does(encoding, tolerance):
  """Against torchvision's resized_crop (PIL, bilinear, antialiased) of the same window: mean
  absolute error under 4 levels where the image is decoded whole (PNG; a window that shrinks
  both ways is area-averaged here, 2-3 levels from PIL's filter on this photograph); JPEG
  windows at least twice the output are decoded at a reduced DCT scale, which moves their
  edges by up to a pixel of that scale, so there: under 12 (a wrong window is off by ~50)."""
  jpeg = photos.sample_jpegs(1, seed=3)[0]
  image = Image.open(io.BytesIO(jpeg)).convert('RGB')
  encoded = jpeg if encoding == 'jpeg' else tf.io.encode_png(np.asarray(image)).numpy()
  recipe = augmentation.Augmentation(crop_scale=(0.08, 1.0))
  shape = tf.constant([image.height, image.width, 3])
  for i in range(6):
    key = tf.constant([i, 1], tf.int64)
    found, _ = imagenet_preprocessing.train_example(encoded, key, 96, recipe)
    y, x, h, w = recipe.crop_window(shape, key).numpy()
    expected = np.asarray(torchvision.transforms.functional.resized_crop(
        image, int(y), int(x), int(h), int(w), [96, 96]))
    error = min(np.abs(found.numpy().astype(float) - e).mean()
                for e in (expected, expected[:, ::-1]))  # Flipped or not.
    assert error < tolerance, (i, error)


def test_streamed_erasing_fills_the_imagenet_mean_rounded_to_uint8():
  jpeg = photos.sample_jpegs(1)[0]
  recipe = augmentation.Augmentation(erasing=1.0, erasing_scale=(0.2, 0.3))
  image, _ = imagenet_preprocessing.train_example(jpeg, tf.constant([4, 2], tf.int64), 64, recipe)
  mean = np.array([124, 116, 104])  # round(255 * (0.485, 0.456, 0.406)).
  filled = np.all(image.numpy() == mean, axis=-1)
  rows, cols = np.nonzero(filled.any(1))[0], np.nonzero(filled.any(0))[0]
  assert 0.2 * 64 * 64 - 64 <= filled[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].sum() <= (
      0.3 * 64 * 64 + 64)


def test_digits_modern_batches_keep_the_order_and_are_a_function_of_seed_and_step(tmp_path):
  paper = take(datasets.open_config(digits_config(str(tmp_path))).train_batches(0), 3)
  config = digits_config(str(tmp_path), auto_augment='rand_augment', random_erasing=0.5)
  modern = take(datasets.open_config(config).train_batches(0), 3)
  resumed = next(datasets.open_config(config).train_batches(2))
  for ours, theirs in zip(modern, paper):
    np.testing.assert_array_equal(ours['label'], theirs['label'])
    assert not np.array_equal(ours['image'], theirs['image'])
  np.testing.assert_array_equal(resumed['image'], modern[2]['image'])


def test_device_resident_erasing_zeroes_one_box_and_keeps_the_rest(tmp_path):
  data = datasets.open_config(digits_config(str(tmp_path)))
  images, labels = data.train_arrays()
  arrays = {'image': images, 'label': labels}
  common = dict(seed=0, batch_size=64, steps_per_epoch=10, pad=2, flip=True)
  paper = device_resident.train_batch(arrays, 7, **common)
  erased = device_resident.train_batch(arrays, 7, **common, erasing=(0.5, (0.1, 0.2), (0.5, 2)))
  again = device_resident.train_batch(arrays, 7, **common, erasing=(0.5, (0.1, 0.2), (0.5, 2)))
  np.testing.assert_array_equal(erased['label'], paper['label'])
  np.testing.assert_array_equal(erased['image'], again['image'])
  changed = np.asarray(erased['image'] != paper['image'])[..., 0]
  assert np.all(np.asarray(erased['image'])[..., 0][changed] == 0)
  counts = changed.reshape(64, -1).sum(1)
  assert 10 <= (counts > 0).sum() <= 54  # About half the images, each at most one box of
  assert counts.max() <= 0.2 * 16 * 16 + 16  # at most 20 % of the image.
  jax.block_until_ready(erased['image'])


@pytest.mark.parametrize('dataset, fields, words', [
    ('digits', dict(train_crop='random_resized'), "dataset.train_crop='scale'"),
    ('digits', dict(eval_crop=16), 'set both to None'),
    ('digits', dict(device_resident=True, auto_augment='rand_augment'),
     'dataset.device_resident=False'),
    ('digits', dict(auto_augment='randaugment'), 'trivial_augment_wide'),
    ('digits', dict(auto_augment='rand_augment', auto_augment_magnitude=31), 'bin from 0 to'),
    ('digits', dict(random_erasing=1.5), 'between 0 and 1'),
    ('digits', dict(auto_augment_interpolation='bicubic'), 'nearest, bilinear'),
    ('digits', dict(erasing_scale=(0.3, 0.2)), 'dataset.erasing_scale=(0.3, 0.2)'),
    ('imagenet2012', dict(crop_scale=(0.08, 1.5)), 'dataset.crop_scale'),
    ('imagenet2012', dict(train_crop='inception'), "'random_resized'"),
    ('imagenet2012', dict(eval_resize=200, eval_crop=224), 'at least 224'),
    ('imagenet2012', dict(eval_crop=300), 'between 32 and 256'),
    ('imagenet2012', dict(imagenet_per_pixel_mean=True, image_size=176, eval_crop=224),
     'dataset.imagenet_per_pixel_mean=False'),
])
def test_combinations_a_path_cannot_run_are_refused(dataset, fields, words):
  config = (digits.get_config() if dataset == 'digits' else imagenet.get_config('resnet50'))
  config.dataset.update(fields)
  found = config_checks.problems(config.dataset, registry.DATASETS[dataset])
  assert len(found) == 1 and words in found[0], found


def test_the_modern_fields_validate_where_a_path_runs_them():
  config = imagenet.get_config('resnet50')
  config.dataset.update(**MODERN, image_size=176, eval_resize=232, eval_crop=224,
                        auto_augment_interpolation='bilinear')
  assert config_checks.problems(config.dataset, registry.DATASETS['imagenet2012']) == []
  config = digits.get_config()
  config.dataset.update(device_resident=True, random_erasing=0.25)
  assert config_checks.problems(config.dataset, registry.DATASETS['digits']) == []


def test_a_refused_combination_stops_the_plan(tmp_path):
  config = digits_config(str(tmp_path), train_crop='random_resized')
  with pytest.raises(ConfigError, match='random_resized'):
    datasets.plan_for(config)


def test_training_with_modern_inputs_evaluates_at_another_size(tmp_path):
  config = short(imagenet.get_config('resnet18'), str(tmp_path / 'tfds'), 32)
  config.dataset.update(**MODERN, eval_resize=48, eval_crop=40)
  with twenty_examples('imagenet2012', str(tmp_path / 'tfds'), ('train', 'validation')):
    state = train.train_and_evaluate(config, str(tmp_path / 'run'))
    evals = list(datasets.open_config(config).eval_split())
  assert int(state.step) == 3
  assert evals[0]['image'].shape[1:] == (40, 40, 3)
  plan = json.loads((tmp_path / 'run' / run_plan.PLAN_FILE).read_text())
  assert (plan['image_shape'], plan['eval_image_shape']) == ([32, 32, 3], [40, 40, 3])
  assert np.isfinite(events.read_scalars(str(tmp_path / 'run'))['eval_error_top1'][1]).all()


@pytest.mark.parametrize('on_device', [False, True])
def test_digits_train_with_erasing_on_either_path(tmp_path, monkeypatch, on_device):
  config = tiny_digits_config(str(tmp_path / 'tfds'), **{
      'dataset.device_resident': on_device, 'dataset.random_erasing': 0.5,
      'dataset.auto_augment': None if on_device else 'trivial_augment_wide'})
  erased = []  # The device-resident step's calls of erase (traced once), with their arguments.
  erase = device_resident.erase
  monkeypatch.setattr(device_resident, 'erase',
                      lambda *args: erased.append(args[2:]) or erase(*args))
  state = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert int(state.step) == 5
  assert erased == ([(0.5, (0.02, 0.33), (0.3, 3.3))] if on_device else [])
  assert np.isfinite(events.read_scalars(str(tmp_path / 'run'))['train_loss'][1]).all()
