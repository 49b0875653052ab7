"""train_and_evaluate on CIFAR-10 through tfds.testing.mock_data and on a small ImageNet written
as TFRecord files: the real pipeline code, a real (small) model, a few steps; what it must leave
behind in the workdir."""

import contextlib

import numpy as np
import pytest

from configs import cifar10, imagenet
from resnet_jax import checkpointing, events, models, train
from resnet_jax.data import datasets
from resnet_jax.testing import tfrecord_imagenet
from resnet_jax.testing.mock_tfds import prepared_mock


@contextlib.contextmanager
def twenty_examples(name, data_dir, splits):
  """20 random examples in each split: mocked (cifar10) or as TFRecord files (imagenet2012)."""
  if name != 'imagenet2012':
    with prepared_mock(name, data_dir, num_examples=20, splits=splits):
      yield
    return
  jpegs = tfrecord_imagenet.tiny_jpegs(20, size=48)
  tfrecord_imagenet.prepare(data_dir, {s: (jpegs, range(20)) for s in splits}, num_files=2)
  yield


def short(config, data_dir, image_size):
  config.dataset.data_dir = data_dir
  config.dataset.image_size = image_size
  config.batch_size, config.eval_batch_size = 8, 8
  if config.model.bn_group_size:  # ImageNet's BatchNorm groups of 32, scaled to this batch.
    config.model.bn_group_size = 4
  config.total_steps, config.total_epochs = 3, None
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 3
  config.eval_every_epochs = config.checkpoint_every_epochs = None  # ImageNet's are in epochs.
  config.optimizer.lr_boundaries = (2,)
  config.optimizer.lr_boundaries_unit = 'steps'
  return config


# The last step's rate is 0.1 / 10: ImageNet's recipe scales 0.1 by the batch, 8 / 256.
@pytest.mark.parametrize('name, config, splits, image_size, final_lr', [
    ('cifar10', cifar10.get_config('resnet20'), ('train', 'test'), 32, 0.01),
    ('imagenet2012', imagenet.get_config('resnet18'), ('train', 'validation'), 32, 0.01 * 8 / 256),
])
def test_train_and_evaluate_on_small_data(tmp_path, name, config, splits, image_size, final_lr):
  config = short(config, str(tmp_path / 'tfds'), image_size)
  config.extra_evals = (f'again={name}:{splits[1]}',)  # The eval split again, as an extra set.
  workdir = str(tmp_path / 'run')
  with twenty_examples(name, str(tmp_path / 'tfds'), splits):
    state = train.train_and_evaluate(config, workdir)
    variables, step = checkpointing.restore_variables(workdir)
    # 20 eval examples in batches of 8: the last batch is padded. Count the mistakes on the real
    # examples alone, outside the training loop's masked metrics.
    data = datasets.open_config(config)
    model = models.from_config(config.model, data.plan.num_classes)
    wrong, seen = 0, 0
    for batch in data.eval_split():
      predicted = np.argmax(model.apply(variables, batch['image'], train=False), -1)
      wrong += int(np.sum((predicted != batch['label'])[batch['mask']]))
      seen += int(batch['mask'].sum())
  assert int(state.step) == 3 and step == 3
  scalars = events.read_scalars(workdir)
  assert scalars['train_loss'][0].tolist() == [3]
  assert np.isfinite(scalars['train_loss'][1]).all()
  np.testing.assert_allclose(scalars['train_learning_rate'][1], [final_lr], rtol=1e-6)
  assert seen == 20
  assert scalars['eval_error_top1'][1][0] == pytest.approx(wrong / 20, abs=1e-6)
  assert scalars['again/error_top1'][1].tolist() == scalars['eval_error_top1'][1].tolist()
