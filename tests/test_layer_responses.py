"""Layer responses (Figure 7) against the BN outputs computed by hand, layer by layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from resnet_jax import checkpointing, models, workdirs
from resnet_jax.data import datasets
from resnet_jax.evaluation import layer_responses
from tests.harness import run_main, tiny_digits_flags

EPSILON = 1e-5


def conv(x, kernel, stride=1):
  pad = (kernel.shape[0] - 1) // 2
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      precision='highest')


def batch_norm(x, params, stats):
  return (x - stats['mean']) / np.sqrt(stats['var'] + EPSILON) * params['scale'] + params['bias']


def relu(x):
  return np.maximum(x, 0)


def randomised(variables, seed):
  """Variables with random BN scales, biases, means and variances, so no BN output is standard."""
  leaves, treedef = jax.tree.flatten_with_path(variables)
  rng = np.random.default_rng(seed)
  new = []
  for path, leaf in leaves:
    name = path[-1].key
    if name in ('scale', 'var'):
      leaf = rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
    elif name in ('bias', 'mean'):
      leaf = rng.normal(0.0, 0.5, leaf.shape).astype(np.float32)
    new.append(jnp.asarray(leaf))
  return jax.tree.unflatten(treedef, new)


def init(model, image_shape, seed=0):
  variables = model.init(jax.random.key(seed), jnp.zeros((1, *image_shape)), train=False)
  return randomised(variables, seed)


def test_basic_block_responses_match_hand_computation():
  model = models.ResNet(stage_sizes=(1,), block=models.BasicBlock, widths=(4,), stem='cifar',
                        num_classes=3, residual=True, shortcut='A')
  images = np.random.default_rng(1).normal(size=(5, 8, 8, 3)).astype(np.float32)
  variables = init(model, images.shape[1:])
  p, s = variables['params'], variables['batch_stats']
  block_p, block_s = p['stage1_block1'], s['stage1_block1']
  stem = batch_norm(conv(images, p['stem_conv']['kernel']), p['stem_bn'], s['stem_bn'])
  bn1 = batch_norm(conv(relu(stem), block_p['conv1']['kernel']), block_p['bn1'], block_s['bn1'])
  bn2 = batch_norm(conv(relu(bn1), block_p['conv2']['kernel']), block_p['bn2'], block_s['bn2'])
  expected = [('stem_bn', np.std(np.float64(stem))),
              ('stage1_block1/bn1', np.std(np.float64(bn1))),
              ('stage1_block1/bn2', np.std(np.float64(bn2)))]

  # Batches of 2: two full batches and a padded one, merged.
  responses = layer_responses.layer_responses(model, variables, images, batch_size=2)

  assert [name for name, _ in responses] == [name for name, _ in expected]
  np.testing.assert_allclose([v for _, v in responses], [v for _, v in expected], rtol=1e-5)
  assert len({round(v, 3) for _, v in expected}) == 3  # Three different layers, not one value.


def test_only_batch_norms_after_3x3_convs_count():
  # Bottleneck block, ImageNet stem, projection shortcut: of stem_bn (7x7), bn1 (1x1), bn2 (3x3),
  # bn3 (1x1) and shortcut/proj_bn (1x1), only bn2 follows a 3x3 conv.
  model = models.ResNet(stage_sizes=(1,), block=models.BottleneckBlock, widths=(2,),
                        stem='imagenet', num_classes=3, shortcut='B')
  images = np.random.default_rng(2).normal(size=(3, 16, 16, 3)).astype(np.float32)
  variables = init(model, images.shape[1:])
  p, s = variables['params'], variables['batch_stats']
  block_p, block_s = p['stage1_block1'], s['stage1_block1']
  x = relu(batch_norm(conv(images, p['stem_conv']['kernel'], stride=2), p['stem_bn'],
                      s['stem_bn']))
  x = jax.lax.reduce_window(x, -np.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                            ((0, 0), (1, 1), (1, 1), (0, 0)))
  x = relu(batch_norm(conv(x, block_p['conv1']['kernel']), block_p['bn1'], block_s['bn1']))
  bn2 = batch_norm(conv(x, block_p['conv2']['kernel']), block_p['bn2'], block_s['bn2'])

  responses = layer_responses.layer_responses(model, variables, images)

  assert [name for name, _ in responses] == ['stage1_block1/bn2']
  np.testing.assert_allclose(responses[0][1], np.std(np.float64(bn2)), rtol=1e-5)


def test_virtual_batch_norm_gives_the_same_responses():
  # In inference both BatchNorms apply the running statistics: the same function, same names.
  kwargs = dict(stage_sizes=(1, 1), block=models.BasicBlock, widths=(4, 8), stem='cifar',
                num_classes=3, shortcut='A')
  images = np.random.default_rng(3).normal(size=(4, 8, 8, 3)).astype(np.float32)
  global_bn = models.ResNet(**kwargs)
  variables = init(global_bn, images.shape[1:])
  grouped = models.ResNet(**kwargs, bn_group_size=2)
  a = layer_responses.layer_responses(global_bn, variables, images)
  b = layer_responses.layer_responses(grouped, variables, images)
  assert [n for n, _ in a] == [n for n, _ in b] and len(a) == 5
  np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=1e-6)


@pytest.fixture(scope='module')
def trained_workdir(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  run_main(workdir, 'configs/digits.py:plain20',
           tiny_digits_flags(data_dir, **{'model.name': 'plain20', 'total_steps': 2}))
  return workdir


@pytest.mark.e2e
def test_workdir_responses_cover_the_whole_test_split(trained_workdir, data_dir):
  workdir = trained_workdir
  config = workdirs.load_config(workdir)
  raw_images, _ = tfds.as_numpy(tfds.builder('digits', data_dir=data_dir).as_dataset(
      split='test', batch_size=-1, as_supervised=True))
  assert len(raw_images) == 297
  images = datasets.open_config(config).preprocess_for_eval(raw_images)
  variables, _ = checkpointing.restore_variables(workdir)
  model = models.from_config(config.model, 10)

  responses = layer_responses.workdir_layer_responses(workdir)

  assert len(responses) == 19  # plain-20: the 3x3 stem and 18 3x3 block layers.
  expected = layer_responses.layer_responses(model, variables, images, batch_size=297)
  np.testing.assert_allclose([v for _, v in responses], [v for _, v in expected], rtol=1e-4)
