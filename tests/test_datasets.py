"""Datasets by name: the registry's entries beside tfds' own facts, each entry through the real
loading code (SMALL ones on tfds.testing.mock_data, IMAGENET ones written as real TFRecord
files), any other tfds dataset read from its builder's info, and each refusal with its message."""

import io
import itertools

import flax.linen as nn
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import cifar10, imagenet
from resnet_jax import checkpointing, events, steps, train, workdirs
from resnet_jax.data import datasets, registry, specs
from resnet_jax.errors import ConfigError, DatasetNotAvailableError
from resnet_jax.testing import tfrecord_imagenet
from resnet_jax.testing.mock_tfds import prepared_mock


def test_registry_entries_agree_with_their_tfds_builders(tmp_path):
  for spec in registry.DATASETS.values():
    builder = tfds.builder(spec.tfds_name, data_dir=str(tmp_path))  # Its code; no data needed.
    labels = builder.info.features[spec.label_feature]
    assert isinstance(labels, tfds.features.Sequence) == spec.label_sets, spec.name
    labels = labels.feature if spec.label_sets else labels
    height, width, channels = builder.info.features['image'].shape
    assert labels.num_classes == spec.num_classes, spec.name
    assert spec.family == registry.family_of(height, width), spec.name
    assert spec.channels == (channels if spec.in_memory else 3), spec.name
    assert builder.info.full_name.startswith(spec.tfds_name + '/'), spec.name  # Config exists.
  # By hand, from the tfds catalog.
  assert {n: s.num_classes for n, s in registry.DATASETS.items() if n not in ('digits', 'cifar10',
                                                                              'imagenet2012')} == {
      'cifar100': 100, 'svhn_cropped': 10, 'imagenette': 10, 'oxford_flowers102': 102,
      'caltech101': 102, 'imagenet_v2': 1000, 'imagenet2012_real': 1000}
  assert [n for n, s in registry.DATASETS.items() if s.eval_only] == ['imagenet_v2',
                                                                       'imagenet2012_real']


def crops_of(image, originals, pad):
  """Every (original, y, x, flipped) of which ``image`` is the crop of the ``pad``-zero-padded
  original at (y, x), flipped or not."""
  size = originals.shape[1]
  padded = np.pad(originals, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  found = []
  for y, x, flipped in itertools.product(range(2 * pad + 1), range(2 * pad + 1), (False, True)):
    crops = padded[:, y:y + size, x:x + size]
    crops = crops[:, :, ::-1] if flipped else crops
    same = np.all(np.abs(crops - image) < 1e-6, axis=(1, 2, 3))
    found += [(int(i), y, x, flipped) for i in np.flatnonzero(same)]
  return found


# CIFAR-100 and SVHN have entries; fashion_mnist none: its facts come from its builder, with the
# CIFAR recipe scaled to its 28 pixels (pad 28 // 8 = 3, flips).
@pytest.mark.parametrize('name, classes, shape, pad, flip', [
    ('cifar100', 100, (32, 32, 3), 4, True),
    ('svhn_cropped', 10, (32, 32, 3), 4, False),
    ('fashion_mnist', 10, (28, 28, 1), 3, True),
])
def test_small_datasets_train_on_padded_crops_of_their_images(tmp_path, name, classes, shape,
                                                              pad, flip):
  config = cifar10.get_config('resnet20')
  config.dataset.update(name=name, data_dir=str(tmp_path), image_size=shape[0])
  config.batch_size = config.eval_batch_size = 16
  with prepared_mock(name, str(tmp_path), num_examples=16):
    data = datasets.open_config(config)
    originals, labels = data.train_arrays()  # Mean subtracted, not augmented.
    batch = next(data.train_batches(0))
    evals = list(data.eval_split())
  plan = data.plan
  assert (plan.num_classes, plan.image_shape, plan.dataset.in_memory) == (classes, shape, True)
  assert batch['image'].shape == (16, *shape) and batch['label'].dtype == np.int32
  assert set(labels) <= set(range(classes))
  found = [crops_of(image, originals, pad) for image in batch['image']]
  assert all(found)
  # The epoch's batch holds each image once, with its own label.
  assert sorted(f[0][0] for f in found) == list(range(16))
  np.testing.assert_array_equal(batch['label'], labels[[f[0][0] for f in found]])
  offsets = {coordinate for f in found for coordinate in f[0][1:3]}
  assert {0, 2 * pad} & offsets  # The crops reach the padding's edges: this much of it.
  assert any(f[0][3] for f in found) == flip
  assert sum(int(b['mask'].sum()) for b in evals) == 16
  assert all(set(b['label'][b['mask']]) <= set(range(classes)) for b in evals)


def encoded(images, format_name):
  """uint8 images as encoded bytes of ``format_name`` ('JPEG', 'PNG')."""
  out = []
  for image in images:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format_name)
    out.append(buffer.getvalue())
  return out


def imagenet_config(tmp_path, name, eval_split):
  config = imagenet.get_config('resnet18')
  config.model.bn_group_size = 0  # Global BatchNorm: the batches here are small.
  config.dataset.update(name=name, data_dir=str(tmp_path), eval_split=eval_split, image_size=32)
  config.model.bn_group_size = 0
  config.batch_size, config.eval_batch_size = 4, 8
  return config


# Every trainable IMAGENET entry, and dtd, which has no entry (nor tfds supervised keys): its
# facts come from its builder, its images stored as PNG here.
@pytest.mark.parametrize('name, tfds_name, classes, splits, image_format', [
    ('imagenette', 'imagenette/full-size-v2', 10, ('train', 'validation'), 'JPEG'),
    ('oxford_flowers102', 'oxford_flowers102', 102, ('train', 'test'), 'JPEG'),
    ('caltech101', 'caltech101', 102, ('train', 'test'), 'JPEG'),
    ('dtd', 'dtd', 47, ('train', 'validation'), 'PNG'),
])
def test_imagenet_style_datasets_stream_their_records(tmp_path, name, tfds_name, classes, splits,
                                                      image_format):
  pixels = np.random.default_rng(0).integers(0, 256, (8, 40, 48, 3), np.uint8)
  written = [(classes - 1 - 3 * i) % classes for i in range(8)]  # The last class among them.
  tfrecord_imagenet.prepare(str(tmp_path), {s: (encoded(pixels, image_format), written)
                                            for s in splits}, num_files=2, name=tfds_name)
  config = imagenet_config(tmp_path, name, splits[1])
  data = datasets.open_config(config)
  assert (data.plan.dataset.family, data.plan.num_classes) == (registry.IMAGENET, classes)
  epoch = list(itertools.islice(data.train_batches(0), 2))
  evals = list(data.eval_split())
  assert all(b['image'].shape == (4, 32, 32, 3) and b['image'].dtype == np.uint8 for b in epoch)
  assert sorted(np.concatenate([b['label'] for b in epoch])) == sorted(written)
  np.testing.assert_array_equal(evals[0]['label'], written)  # Stored order, all 8.
  assert evals[0]['mask'].all() and evals[0]['image'].shape == (8, 32, 32, 3)


def test_a_png_image_is_cropped_as_a_jpeg_is(tmp_path):
  # A 256 x 256 image at image_size 256: the centre crop at shorter side 256 is the whole image.
  pixels = np.random.default_rng(1).integers(0, 256, (2, 256, 256, 3), np.uint8)
  tfrecord_imagenet.prepare(str(tmp_path), {'train': (encoded(pixels, 'PNG'), [0, 1]),
                                            'test': (encoded(pixels, 'PNG'), [0, 1])},
                            num_files=1, name='dtd')
  config = imagenet_config(tmp_path, 'dtd', 'test')
  config.dataset.image_size = 256
  batch, = datasets.open_config(config, training=False).eval_split()
  np.testing.assert_array_equal(batch['image'][:2], pixels)


def test_evaluation_only_sets_are_refused_for_training_and_evaluate(tmp_path):
  jpegs = tfrecord_imagenet.tiny_jpegs(6, size=40)
  tfrecord_imagenet.prepare(str(tmp_path), {'test': (jpegs, [999, 0, 5, 7, 1, 2])}, num_files=2,
                            name='imagenet_v2/matched-frequency')
  config = imagenet_config(tmp_path, 'imagenet_v2', 'test')
  with pytest.raises(ConfigError, match="'imagenet_v2' is an evaluation-only dataset: it has no "
                     r'train split, only test \(6 images\)'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
  batch, = datasets.open_config(config, training=False).eval_split()
  np.testing.assert_array_equal(batch['label'][:6], [999, 0, 5, 7, 1, 2])


class MeanColourClassifier(nn.Module):
  """Scores 1,000 classes from an image's mean colour."""

  @nn.compact
  def __call__(self, images, train):
    del train
    return nn.Dense(1000)(images.mean(axis=(1, 2)))


def test_real_labels_are_sets_scored_against_their_members(tmp_path):
  sets = [[3], [3, 7], [], [999, 0, 12]]  # ReaL leaves some images without a label: skipped.
  tfrecord_imagenet.prepare(str(tmp_path), {'validation': (tfrecord_imagenet.tiny_jpegs(
      4, size=40), sets)}, num_files=1, name='imagenet2012_real')
  config = imagenet_config(tmp_path, 'imagenet2012_real', 'validation')
  batch, = datasets.open_config(config, training=False).eval_split()
  assert [np.flatnonzero(s).tolist() for s in batch['label_set'][:4]] == [
      [3], [3, 7], [], [0, 12, 999]]
  # A linear classifier of ImageNet's 1,000 classes and the training loop's eval step.
  model = MeanColourClassifier()
  variables = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32), train=False)
  metrics = jax.jit(lambda v, b: steps.eval_step(v, b, model=model).compute())(variables, batch)
  scores = np.asarray(model.apply(variables, steps.model_images(batch), train=False))
  ranks = np.argsort(-scores, axis=-1)
  labelled = [i for i, s in enumerate(sets) if s]
  # By hand: a prediction is right when a class of the image's set is among the top k.
  for k, key in ((1, 'error_top1'), (5, 'error_top5')):
    expected = np.mean([not set(ranks[i, :k]) & set(sets[i]) for i in labelled])
    assert float(metrics[key]) == pytest.approx(expected, abs=1e-6)
  with pytest.raises(ValueError, match='labels each image with a set of classes'):
    from resnet_jax.evaluation import protocols  # pylint: disable=import-outside-toplevel
    protocols.evaluate(datasets.plan_for(config, training=False), model, variables, 'center')


def brute_force_set_errors(scores, label_set, k):
  """The chance that no class of ``label_set`` is among the top k, over every order of the
  tied scores (an independent count of ``steps.top_k_set_errors``)."""
  orders = list(itertools.permutations(range(len(scores))))
  ranked = [sorted(order, key=lambda c: -scores[c]) for order in orders]  # Stable: ties permuted.
  return np.mean([not set(r[:k]) & label_set for r in ranked])


@pytest.mark.parametrize('scores, label_set', [
    ([3.0, 2.0, 1.0, 0.0, -1.0], {1}),
    ([1.0, 1.0, 1.0, 1.0, 1.0], {0, 1}),        # All tied: none of 2 among 2 of 5 is 3/10.
    ([2.0, 1.0, 1.0, 1.0, 0.0], {2, 3}),
    ([0.0, 5.0, 5.0, 5.0, 5.0], {0, 4}),
])
def test_set_errors_count_ties_as_a_random_order(scores, label_set):
  label_sets = np.array([[c in label_set for c in range(5)]])
  errors = steps.top_k_set_errors(np.array([scores], np.float32), label_sets, (1, 2, 3))
  np.testing.assert_allclose(errors[0], [brute_force_set_errors(scores, label_set, k)
                                         for k in (1, 2, 3)], atol=1e-6)
  # A set of one class is an ordinary label.
  one = np.array([[c == min(label_set) for c in range(5)]])
  np.testing.assert_allclose(steps.top_k_set_errors(np.array([scores], np.float32), one, (1, 2)),
                             steps.top_k_errors(np.array([scores], np.float32),
                                                np.array([min(label_set)]), (1, 2)), atol=1e-6)


def test_an_empty_set_or_a_nan_score_is_an_error():
  errors = steps.top_k_set_errors(np.array([[1.0, 0.0], [np.nan, 0.0]], np.float32),
                                  np.array([[False, False], [True, True]]), (1, 2))
  np.testing.assert_array_equal(errors, [[1, 1], [1, 1]])


@pytest.mark.parametrize('name, error, message', [
    ('smallnorb', ConfigError, 'no label feature named "label".*label_category'),
    ('imdb_reviews', ConfigError, 'no image feature named "image".*text'),
    ('no_such_dataset', ConfigError, 'neither a registered dataset .* nor a tfds dataset'),
    ('imagenette/no_such_config', ConfigError, 'nor a tfds dataset.*BuilderConfig no_such_config'),
    ('fashion_mnist', DatasetNotAvailableError, 'not prepared .*`tfds build fashion_mnist'),
])
def test_a_tfds_dataset_that_cannot_train_is_refused_naming_what_is_missing(tmp_path, name,
                                                                            error, message):
  config = cifar10.get_config('resnet20')
  config.dataset.update(name=name, data_dir=str(tmp_path))
  with pytest.raises(error, match=message):
    specs.spec_of(name, config.dataset)
  assert not list(tmp_path.iterdir())  # Nothing was written.


class UnknownChannels(tfds.core.GeneratorBasedBuilder):
  """Images of an unknown number of channels."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, None)),
        'label': tfds.features.ClassLabel(num_classes=2)}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    yield from ()


def test_images_of_unknown_channels_are_refused(tmp_path):
  config = cifar10.get_config('resnet20')
  config.dataset.update(name='unknown_channels', data_dir=str(tmp_path))
  with pytest.raises(ConfigError, match=r'its image shape \(None, None, None\) is unknown'):
    specs.spec_of('unknown_channels', config.dataset)


@pytest.mark.parametrize('name, overrides, message', [
    ('imagenette', {'eval_split': 'test'}, (
        r"eval_split='test' cannot be read from imagenette: it has no split 'test'. Its splits "
        r'are train \(4 images\), validation \(4 images\).*eval_split=validation')),
    ('fashion_mnist', {'image_size': 32}, (
        'image_size=32 does not fit fashion_mnist: crops must be between 28 and 28')),
])
def test_a_split_or_size_the_dataset_lacks_stops_the_run_first(tmp_path, name, overrides,
                                                               message):
  config = cifar10.get_config('resnet20')
  config.dataset.update(name=name, data_dir=str(tmp_path / 'tfds'), **overrides)
  # The dataset's own splits, four examples each.
  splits = tuple(registry.DATASETS[name].splits) if name in registry.DATASETS else ('train',
                                                                                  'test')
  with (prepared_mock(name, str(tmp_path / 'tfds'), num_examples=4, splits=splits),
        pytest.raises(ConfigError, match=message)):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_a_tfds_dataset_without_an_entry_trains_by_its_name(tmp_path):
  # EMNIST's balanced letters and digits: 47 classes of 28 x 28 grey images, named with their
  # tfds config; its facts come from its builder.
  config = cifar10.get_config('resnet20')
  config.model.stage_sizes = (1, 1, 1)
  config.dataset.update(name='emnist/balanced', data_dir=str(tmp_path / 'tfds'), image_size=28)
  config.batch_size, config.eval_batch_size = 8, 8
  config.total_steps = config.log_every_steps = config.eval_every_steps = 1
  config.checkpoint_every_steps = 1
  workdir = str(tmp_path / 'run')
  with prepared_mock('emnist/balanced', str(tmp_path / 'tfds'), num_examples=16):
    state = train.train_and_evaluate(config, workdir)
  variables, step = checkpointing.restore_variables(workdir)
  assert int(state.step) == step == 1
  assert variables['params']['fc']['kernel'].shape == (64, 47)
  assert variables['params']['stem_conv']['kernel'].shape[2] == 1  # One channel in.
  assert np.isfinite(events.read_scalars(workdir)['eval_error_top1'][1]).all()
  assert workdirs.load_config(workdir).dataset.name == 'emnist/balanced'
