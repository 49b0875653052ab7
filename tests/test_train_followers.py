"""One net of each kind after the paper trains through main.py, as a user runs it: pre-activation
(with stochastic depth) and wide (with dropout) on the bundled digits, ResNeXt and ResNet-D on a
small ImageNet of JPEG files. A few steps each: the run ends, checkpoints and logs finite
losses."""

import numpy as np
import pytest

from resnet_jax import checkpointing, events
from resnet_jax.testing import tfrecord_imagenet
from tests.harness import run_main, tiny_digits_flags

pytestmark = pytest.mark.e2e  # Every test starts processes.

STEPS = 3


def short(**fields):
  """Flags of a STEPS-step run that logs, evaluates and checkpoints at its last step."""
  fields = {'total_epochs': 0.0, 'total_steps': STEPS, 'log_every_steps': 1,
            'eval_every_steps': STEPS, 'checkpoint_every_steps': STEPS, **fields}
  return [f'--config.{k}={v}' for k, v in fields.items()]


def losses(workdir):
  return events.read_scalars(workdir)['train_loss'][1]


def assert_trained(workdir):
  variables, step = checkpointing.restore_variables(workdir)
  assert step == STEPS
  assert np.isfinite(losses(workdir)).all() and len(losses(workdir)) == STEPS
  return variables


@pytest.mark.parametrize('net, field, value', [('preact_resnet164', 'drop_path_rate', 0.2),
                                               ('wrn16_8', 'dropout_rate', 0.3)])
def test_cifar_family_nets_train_on_digits_with_their_regulariser(data_dir, tmp_path, net,
                                                                   field, value):
  workdir = str(tmp_path / 'run')
  run_main(workdir, f'configs/digits.py:{net}', [
      *tiny_digits_flags(data_dir, total_steps=STEPS, eval_every_steps=STEPS,
                         checkpoint_every_steps=STEPS, **{'model.name': net}),
      f'--config.model.{field}={value}'])
  variables = assert_trained(workdir)
  if net.startswith('preact'):  # Its stages of 18 blocks are scanned (models.layouts).
    assert 'stage3_blocks' in variables['params']


@pytest.mark.parametrize('net, stem', [('resnext50_32x4d', 'stem_conv'),
                                       ('resnet50d', 'stem_conv1')])
def test_imagenet_family_nets_train_on_jpeg_records(tmp_path, net, stem):
  data_dir = str(tmp_path / 'tfds')
  jpegs = tfrecord_imagenet.tiny_jpegs(16, size=48)
  tfrecord_imagenet.prepare(data_dir, {split: (jpegs, range(16)) for split in
                                       ('train', 'validation')}, num_files=2)
  workdir = str(tmp_path / 'run')
  run_main(workdir, f'configs/imagenet.py:{net}', short(**{
      'dataset.data_dir': data_dir, 'dataset.image_size': 32, 'batch_size': 8,
      'eval_batch_size': 8, 'model.bn_group_size': 4, 'eval_every_epochs': 0,
      'checkpoint_every_epochs': 0, 'optimizer.lr_boundaries_unit': 'steps',
      'optimizer.lr_boundaries': (2,)}))
  assert stem in assert_trained(workdir)['params']
