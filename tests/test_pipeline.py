"""The tfds input pipelines: the bundled digits for real, CIFAR-10 through mock_data, ImageNet on
small TFRecord files."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from configs import cifar10, digits, imagenet
from resnet_jax.data import cifar, datasets
from resnet_jax.data import digits as digits_dataset
from resnet_jax.data import imagenet as imagenet_preprocessing
from resnet_jax.errors import DatasetNotAvailableError
from resnet_jax.testing import tfrecord_imagenet
from resnet_jax.testing.mock_tfds import prepared_mock


@pytest.fixture(scope='module')
def digits_config(tmp_path_factory):
  config = digits.get_config()
  config.dataset.data_dir = str(tmp_path_factory.mktemp('tfds'))
  config.batch_size = 32
  config.eval_batch_size = 64
  return config


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_digits_builder_serves_scikit_learns_images_and_labels(digits_config):
  builder = tfds.builder('digits', data_dir=digits_config.dataset.data_dir)
  builder.download_and_prepare()
  sk = load_digits()
  seen = []
  for split, size in (('train', 1500), ('test', 297)):
    images, labels = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1,
                                                      as_supervised=True))
    assert images.shape == (size, 8, 8, 1) and images.dtype == np.uint8
    # Each stored image is a scikit-learn digit (0..16) scaled to 0..255 with its own label.
    index = digits_dataset.split_indices()[split]
    np.testing.assert_array_equal(images[..., 0], np.round(sk.images[index] * 255 / 16 + 1e-9))
    np.testing.assert_array_equal(labels, sk.target[index])
    seen.extend(index.tolist())
  assert sorted(seen) == list(range(1797))  # A partition of all 1,797 examples.


def test_the_plan_of_the_digits(digits_config):
  plan = datasets.plan_for(digits_config)
  assert (plan.num_classes, plan.train_examples, plan.eval_sets[0].num_examples) == (10, 1500,
                                                                                    297)
  assert plan.image_shape == (16, 16, 1) and plan.steps_per_epoch == 1500 // 32


def test_preprocessed_train_split_has_zero_mean_per_pixel(digits_config):
  images, labels = datasets.open_config(digits_config).train_arrays()
  assert images.shape == (1500, 16, 16, 1) and labels.shape == (1500,)
  np.testing.assert_allclose(images.mean(axis=0), 0.0, atol=1e-5)
  assert 0.1 < images.std() < 0.5  # Pixels were scaled to [0, 1], not left in 0..255.


def test_train_batches_are_a_function_of_seed_and_step(digits_config):
  batches = take(datasets.open_config(digits_config).train_batches(0), 50)
  again = take(datasets.open_config(digits_config).train_batches(0), 50)
  resumed = take(datasets.open_config(digits_config).train_batches(45), 5)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  for a, b in zip(batches[45:], resumed):  # Crosses the epoch boundary at step 46.
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  assert batches[0]['image'].shape == (32, 16, 16, 1)
  other_seed = digits_config.copy_and_resolve_references()
  other_seed.seed = 1
  first = next(datasets.open_config(other_seed).train_batches(0))
  assert not np.array_equal(first['label'], batches[0]['label'])


def test_an_epoch_visits_distinct_examples_and_the_next_reorders_them(digits_config):
  steps = datasets.open_config(digits_config).plan.steps_per_epoch
  assert steps == 1500 // 32
  batches = take(datasets.open_config(digits_config).train_batches(0), 2 * steps)
  epoch0 = np.concatenate([b['image'] for b in batches[:steps]]).reshape(steps * 32, -1)
  epoch1 = np.concatenate([b['image'] for b in batches[steps:]]).reshape(steps * 32, -1)
  assert len(np.unique(epoch0, axis=0)) >= steps * 32 - 5  # A few digits are exact duplicates.
  assert not np.array_equal(epoch0, epoch1)


def test_one_process_with_two_shards_equals_two_processes(digits_config):
  config = digits_config.copy_and_resolve_references()
  config.dataset.num_shards = 2
  one = take(datasets.open_config(config).train_batches(3), 3)
  parts = [take(datasets.open_config(config, processes=2, process_index=p).train_batches(3), 3)
           for p in range(2)]
  for step in range(3):
    for field in ('image', 'label'):
      np.testing.assert_array_equal(
          one[step][field], np.concatenate([parts[0][step][field], parts[1][step][field]]))
  # The two processes read disjoint examples.
  images = [np.concatenate([b['image'] for b in p]).reshape(48, -1) for p in parts]
  assert not any((images[0][:, None] == images[1][None]).all(-1).any(1))


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_covers_the_split_exactly_once(digits_config, process_count):
  batches = [list(datasets.open_config(digits_config, processes=process_count,
                                       process_index=p).eval_split())
             for p in range(process_count)]
  assert len({len(b) for b in batches}) == 1  # Every process runs the same number of steps.
  per_batch = 64 // process_count
  assert all(x['image'].shape[0] == per_batch for b in batches for x in b)
  labels = np.concatenate([x['label'][x['mask']] for b in batches for x in b])
  assert len(labels) == 297
  expected = load_digits().target[digits_dataset.split_indices()['test']]
  np.testing.assert_array_equal(np.sort(labels), np.sort(expected))
  if process_count == 1:
    np.testing.assert_array_equal(labels, expected)  # In stored order, nothing dropped.


def test_pad_crop_flip_is_a_shifted_window_of_the_padded_image():
  image = tf.random.stateless_uniform((32, 32, 3), (0, 0))
  padded = np.pad(image.numpy(), ((4, 4), (4, 4), (0, 0)))
  seen = set()
  for i in range(100):
    out = cifar.pad_crop_flip(image, tf.constant([i, 7], tf.int64), 4, True).numpy()
    matches = [(y, x, flip) for y in range(9) for x in range(9) for flip in (False, True)
               if np.array_equal(out, (lambda w: w[:, ::-1] if flip else w)(
                   padded[y:y + 32, x:x + 32]))]
    assert len(matches) == 1
    seen.add(matches[0])
  assert len(seen) > 50 and {flip for _, _, flip in seen} == {False, True}


def test_imagenet_centre_window_by_hand():
  # Shorter side 300 -> crop 300 * 224 / 256 = 262.5 -> 262 (round half to even), centred.
  window = imagenet_preprocessing.centre_window(tf.constant([300, 400, 3]), 224).numpy()
  np.testing.assert_array_equal(window, [19, 69, 262, 262])


def test_cifar10_pipeline_through_mock_data(tmp_path):
  config = cifar10.get_config('resnet20')
  config.dataset.data_dir = str(tmp_path)
  config.batch_size, config.eval_batch_size = 8, 16
  with prepared_mock('cifar10', str(tmp_path), num_examples=40):
    plan = datasets.plan_for(config)
    assert (plan.num_classes, plan.train_examples, plan.image_shape) == (10, 40, (32, 32, 3))
    batch = next(datasets.open_config(config).train_batches(0))
    assert batch['image'].shape == (8, 32, 32, 3) and batch['label'].dtype == np.int32
    evals = list(datasets.open_config(config).eval_split())
    assert [int(b['mask'].sum()) for b in evals] == [16, 16, 8]


def test_imagenet_pipeline_on_tfrecord_files(tmp_path):
  config = imagenet.get_config('resnet18')
  config.model.bn_group_size = 0  # Global BatchNorm: the batches here are small.
  config.dataset.data_dir = str(tmp_path)
  config.dataset.image_size = 64
  config.batch_size, config.eval_batch_size = 4, 8
  jpegs = tfrecord_imagenet.tiny_jpegs(12, size=32)
  tfrecord_imagenet.prepare(str(tmp_path), {'train': (jpegs, range(12)),
                                            'validation': (jpegs, range(12))}, num_files=3)
  batches = take(datasets.open_config(config).train_batches(0), 6)
  resumed = next(datasets.open_config(config).train_batches(4))
  np.testing.assert_array_equal(resumed['image'], batches[4]['image'])
  np.testing.assert_array_equal(resumed['image_offset'], batches[4]['image_offset'])
  assert batches[0]['image'].shape == (4, 64, 64, 3) and batches[0]['image'].dtype == np.uint8
  epochs = [np.concatenate([b['label'] for b in batches[i:i + 3]]) for i in (0, 3)]
  assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(12))
  assert list(epochs[0]) != list(epochs[1])
  evals = list(datasets.open_config(config).eval_split())
  assert [int(b['mask'].sum()) for b in evals] == [8, 4]
  assert np.isfinite(evals[0]['image']).all()


@pytest.mark.parametrize('name, hint', [('cifar10', 'tfds build cifar10'),
                                        ('imagenet2012', 'manual_dir')])
def test_missing_dataset_says_how_to_prepare_it(tmp_path, name, hint):
  config = cifar10.get_config('resnet20') if name == 'cifar10' else imagenet.get_config('resnet18')
  config.model.bn_group_size = 0
  config.dataset.data_dir = str(tmp_path)
  with pytest.raises(DatasetNotAvailableError, match=hint):
    datasets.open_config(config)
  assert not list(tmp_path.iterdir())  # Nothing was written.
