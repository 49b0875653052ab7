"""The model zoo against the paper: parameter counts, multiply-adds, shapes and block semantics."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from resnet_jax import models
from tools.model_table import (
  multiply_adds,  # Conv and dense layers: positions x kernel size.
)

# PAPER.md: option A for CIFAR (10 classes), option B for ImageNet (1000 classes), torchvision's
# counting (BN scale and bias included, running statistics excluded).
PAPER_PARAMS = {
    'resnet20': 269_722, 'resnet32': 464_154, 'resnet44': 658_586, 'resnet56': 853_018,
    'resnet110': 1_727_962, 'resnet1202': 19_421_274,
    'resnet18': 11_689_512, 'resnet34': 21_797_672, 'resnet50': 25_557_032,
    'resnet101': 44_549_160, 'resnet152': 60_192_808,
}
# Table 1 multiply-adds at 224x224; "v1.5" ResNet-50 from the cost section.
PAPER_MULTIPLY_ADDS = {'resnet18': 1.8e9, 'resnet34': 3.6e9, 'resnet50': 3.8e9,
                       'resnet101': 7.6e9, 'resnet152': 11.3e9}


train_norm = functools.partial(nn.BatchNorm, use_running_average=False)


def num_classes(name):
  return 10 if models.model_family(name) == 'cifar' else 1000


def input_for(name, batch=1, size=None):
  size = size or (32 if models.model_family(name) == 'cifar' else 224)
  return jnp.zeros((batch, size, size, 3), jnp.float32)


def abstract_variables(model, x):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def projection_params(in_ch, out_ch):
  """A 1x1 projection conv and its BN scale and bias."""
  return in_ch * out_ch + 2 * out_ch


@pytest.mark.parametrize('name', sorted(PAPER_PARAMS))
def test_residual_parameter_counts_match_paper(name):
  model = models.create_model(name, num_classes(name))
  assert count(abstract_variables(model, input_for(name))['params']) == PAPER_PARAMS[name]


@pytest.mark.parametrize('depth', [20, 32, 44, 56, 110])
def test_cifar_plain_nets_have_residual_counts(depth):
  # Option A shortcuts are parameter-free, so plain and residual CIFAR nets are the same size.
  model = models.create_model(f'plain{depth}', 10)
  assert count(abstract_variables(model, input_for('resnet20'))['params']) == (
      PAPER_PARAMS[f'resnet{depth}'])


@pytest.mark.parametrize('depth', [18, 34])
def test_imagenet_plain_nets_lack_exactly_the_projections(depth):
  model = models.create_model(f'plain{depth}', 1000)
  # Option B projects at the first block of stages 2, 3 and 4: 64->128, 128->256, 256->512.
  projections = sum(projection_params(c, 2 * c) for c in (64, 128, 256))
  assert count(abstract_variables(model, input_for('resnet18'))['params']) == (
      PAPER_PARAMS[f'resnet{depth}'] - projections)


def test_option_c_adds_a_projection_to_every_block():
  model_b = models.create_model('resnet34', 1000)
  model_c = models.create_model('resnet34', 1000, shortcut='C')
  # Blocks with an identity shortcut under option B: (3, 4, 6, 3) blocks minus one per stage
  # after the first; their projections are square, width x width.
  identity_blocks = {64: 3, 128: 3, 256: 5, 512: 2}
  extra = sum(n * projection_params(w, w) for w, n in identity_blocks.items())
  x = input_for('resnet34')
  assert count(abstract_variables(model_c, x)['params']) == (
      count(abstract_variables(model_b, x)['params']) + extra)


def test_option_a_resnet34_has_no_projection_parameters():
  model_a = models.create_model('resnet34', 1000, shortcut='A')
  plain = models.create_model('plain34', 1000)
  x = input_for('resnet34')
  assert count(abstract_variables(model_a, x)['params']) == count(
      abstract_variables(plain, x)['params'])


@pytest.mark.parametrize('name', sorted(PAPER_MULTIPLY_ADDS))
def test_multiply_adds_match_table_1(name):
  madds = multiply_adds(models.create_model(name, 1000), input_for(name))
  assert madds == pytest.approx(PAPER_MULTIPLY_ADDS[name], rel=0.05)


def test_v1_5_resnet50_multiply_adds():
  model = models.create_model('resnet50', 1000, bottleneck_stride_on='3x3')
  assert multiply_adds(model, input_for('resnet50')) == pytest.approx(4.09e9, rel=0.01)


@pytest.mark.parametrize('name,expected', [('resnet20', 40.6e6), ('resnet56', 125.5e6),
                                           ('resnet110', 252.9e6)])
def test_cifar_multiply_adds(name, expected):
  madds = multiply_adds(models.create_model(name, 10), input_for(name))
  assert madds == pytest.approx(expected, rel=0.005)


def stage_shapes(model, x):
  def run():
    variables = model.init(jax.random.key(0), x, train=False)
    _, state = model.apply(variables, x, train=False, mutable=['intermediates'],
                           capture_intermediates=True)
    return state['intermediates']
  inter = jax.eval_shape(run)
  blocks = sorted(k for k in inter if k.endswith('_block1'))
  last = {}
  for key in inter:
    if key.startswith('stage'):
      stage = key.split('_')[0]
      last[stage] = max(last.get(stage, key), key, key=lambda k: int(k.split('block')[1]))
  return [inter[last[s]]['__call__'][0].shape for s in sorted(last)], blocks


def test_imagenet_stage_shapes_follow_table_1():
  shapes, _ = stage_shapes(models.create_model('resnet50', 1000), input_for('resnet50', 2))
  assert shapes == [(2, 56, 56, 256), (2, 28, 28, 512), (2, 14, 14, 1024), (2, 7, 7, 2048)]
  shapes, _ = stage_shapes(models.create_model('resnet18', 1000), input_for('resnet18', 2))
  assert shapes == [(2, 56, 56, 64), (2, 28, 28, 128), (2, 14, 14, 256), (2, 7, 7, 512)]


def test_cifar_stage_shapes():
  shapes, _ = stage_shapes(models.create_model('resnet20', 10), input_for('resnet20', 2))
  assert shapes == [(2, 32, 32, 16), (2, 16, 16, 32), (2, 8, 8, 64)]


def test_deepest_nets_build_abstractly():
  resnet1202 = models.create_model('resnet1202', 10)
  logits = jax.eval_shape(lambda: resnet1202.init_with_output(
      jax.random.key(0), input_for('resnet1202', 2), train=False)[0])
  assert logits.shape == (2, 10)
  # Counted one module per block (its stages' blocks are stacked: models.layouts).
  params = models.unrolled(abstract_variables(resnet1202, input_for('resnet1202'))['params'])
  assert len([k for k in params if 'block' in k]) == 3 * 200
  weighted_layers = [k for k in flatten_dict(params) if k[-1] == 'kernel']
  assert len(weighted_layers) == 1202  # 2 convs per block, the stem conv and the classifier.


def test_plain_net_has_no_shortcut():
  model = models.create_model('plain20', 10)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  paths = ['/'.join(p) for p in flatten_dict(variables['params'])]
  assert not any('shortcut' in p or 'proj' in p for p in paths)
  # A plain block is relu(bn2(conv2(...))) alone: with its convs and BN zeroed it outputs zeros
  # whatever the input, where a residual block would pass relu(x) through its shortcut.
  block = models.BasicBlock(16, 1, False, 'A', models.conv_factory(jnp.float32), train_norm,
                            train_norm)
  h = x[..., :1].repeat(16, -1) + 5.0
  block_vars = jax.tree.map(jnp.zeros_like, block.init(jax.random.key(0), h))
  out = block.apply(block_vars, h, mutable=['batch_stats'])[0]
  assert float(jnp.abs(out).max()) == 0.0


def test_option_a_is_exact_identity_at_matching_shapes():
  x = jax.random.normal(jax.random.key(2), (2, 8, 8, 16))
  shortcut = models.Shortcut(16, 1, 'A', models.conv_factory(jnp.float32), train_norm)
  out, variables = shortcut.init_with_output(jax.random.key(0), x)
  assert not variables
  np.testing.assert_array_equal(out, x)


def test_option_a_subsamples_and_zero_pads():
  x = jax.random.normal(jax.random.key(3), (2, 8, 8, 16))
  shortcut = models.Shortcut(32, 2, 'A', models.conv_factory(jnp.float32), train_norm)
  out, _ = shortcut.init_with_output(jax.random.key(0), x)
  assert out.shape == (2, 4, 4, 32)
  np.testing.assert_array_equal(out[..., :16], np.asarray(x)[:, ::2, ::2, :])
  np.testing.assert_array_equal(out[..., 16:], 0.0)


def test_residual_block_adds_identity_before_final_relu():
  # With every conv and BN zeroed, F(x) = 0 so a residual block returns relu(x).
  x = jax.random.normal(jax.random.key(4), (2, 8, 8, 16))
  block = models.BasicBlock(16, 1, True, 'A', models.conv_factory(jnp.float32), train_norm,
                            train_norm)
  variables = jax.tree.map(jnp.zeros_like, block.init(jax.random.key(0), x))
  out = block.apply(variables, x, mutable=['batch_stats'])[0]
  np.testing.assert_allclose(out, jax.nn.relu(x), atol=1e-6)


@pytest.mark.parametrize('stride_on,expected', [('1x1', ((2, 2), (1, 1))),
                                                ('3x3', ((1, 1), (2, 2)))])
def test_bottleneck_stride_placement(stride_on, expected):
  model = models.create_model('resnet50', 1000, bottleneck_stride_on=stride_on)
  x = input_for('resnet50', 1, size=64)
  def run():
    variables = model.init(jax.random.key(0), x, train=False)
    return model.apply(variables, x, train=False, mutable=['intermediates'],
                       capture_intermediates=True)[1]['intermediates']
  block = jax.eval_shape(run)['stage2_block1']
  spatial_in = 64 // 4  # After the stem and max pool.
  conv1 = block['conv1']['__call__'][0].shape[1]
  conv2 = block['conv2']['__call__'][0].shape[1]
  assert (spatial_in // conv1, conv1 // conv2) == (expected[0][0], expected[1][0])


def test_train_mode_updates_batch_stats_and_eval_mode_uses_them():
  model = models.create_model('resnet20', 10)
  x = jax.random.normal(jax.random.key(5), (4, 32, 32, 3)) * 3.0 + 1.0
  variables = model.init(jax.random.key(0), x, train=False)
  _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  before = flatten_dict(variables['batch_stats'])
  after = flatten_dict(updates['batch_stats'])
  stem_mean = ('stem_bn', 'mean')
  assert not np.allclose(before[stem_mean], after[stem_mean])
  # momentum 0.9: new running mean = 0.9 * 0 + 0.1 * batch mean of the stem conv output.
  conv_out = model.apply(variables, x, train=False, mutable=['intermediates'],
                         capture_intermediates=True)[1]['intermediates']['stem_conv']
  batch_mean = np.asarray(conv_out['__call__'][0]).mean(axis=(0, 1, 2))
  np.testing.assert_allclose(after[stem_mean], 0.1 * batch_mean, rtol=1e-4, atol=1e-6)
  # Eval mode reads the running averages and leaves them unchanged.
  new_vars = {'params': variables['params'], 'batch_stats': updates['batch_stats']}
  logits_a, state = model.apply(new_vars, x, train=False, mutable=['batch_stats'])
  assert jax.tree.all(jax.tree.map(np.array_equal, state['batch_stats'],
                                   updates['batch_stats']))
  logits_b = model.apply(new_vars, x[:1], train=False)
  np.testing.assert_allclose(logits_a[:1], logits_b, rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_close_logits():
  x = jax.random.normal(jax.random.key(6), (4, 32, 32, 3))
  model32 = models.create_model('resnet20', 10)
  model16 = models.create_model('resnet20', 10, dtype='bfloat16')
  variables = model16.init(jax.random.key(0), x, train=False)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  logits32 = model32.apply(variables, x, train=True, mutable=['batch_stats'])[0]
  logits16, stats16 = model16.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits16.dtype == jnp.float32
  assert {leaf.dtype for leaf in jax.tree.leaves(stats16)} == {jnp.dtype(jnp.float32)}
  scale = float(jnp.abs(logits32).max())
  np.testing.assert_allclose(logits16, logits32, atol=0.05 * scale)


def test_bfloat16_nets_pool_and_classify_in_float32():
  x = jax.random.normal(jax.random.key(6), (4, 16, 16, 3))
  model = models.create_model('resnet20', 10, dtype='bfloat16', stage_sizes=(1, 1, 1))
  variables = model.init(jax.random.key(0), x, train=False)
  logits, captured = model.apply(variables, x, train=False, capture_intermediates=True,
                                 mutable=['intermediates'])
  features = captured['intermediates']['stage3_block1']['__call__'][0]
  assert features.dtype == jnp.bfloat16 and logits.dtype == jnp.float32
  # The last block's bfloat16 output, averaged and classified in float64 by hand: bfloat16
  # logits would be 2^-8 off, float32 ones agree to float32 round-off.
  pooled = np.asarray(features.astype(jnp.float32), np.float64).mean((1, 2))
  fc = variables['params']['fc']
  expected = pooled @ np.asarray(fc['kernel'], np.float64) + np.asarray(fc['bias'], np.float64)
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_zero_init_last_bn_makes_blocks_start_as_identity():
  model = models.create_model('resnet20', 10, zero_init_last_bn=True)
  variables = model.init(jax.random.key(0), input_for('resnet20'), train=False)
  scales = flatten_dict(variables['params'])
  assert np.all(scales[('stage1_block1', 'bn2', 'scale')] == 0)
  assert np.all(scales[('stage1_block1', 'bn1', 'scale')] == 1)
  default = models.create_model('resnet20', 10).init(jax.random.key(0), input_for('resnet20'),
                                                      train=False)
  assert np.all(flatten_dict(default['params'])[('stage1_block1', 'bn2', 'scale')] == 1)


def test_he_initialisation_std():
  model = models.create_model('resnet56', 10)
  params = flatten_dict(model.init(jax.random.key(0), input_for('resnet56'),
                                   train=False)['params'])
  kernel = np.asarray(params[('stage3_block1', 'conv2', 'kernel')])  # 3x3x64x64
  assert kernel.std() == pytest.approx(np.sqrt(2.0 / (3 * 3 * 64)), rel=0.03)


def test_symmetric_padding_matches_reference_geometry():
  # Pad 3 for the 7x7/2 stem: a 224 input gives 112, the max pool (pad 1) gives 56. A 'SAME'
  # stem would pad (2, 3); symmetric padding makes the first output column see the pixels 0..3.
  model = models.create_model('resnet18', 1000)
  x = jnp.zeros((1, 224, 224, 3)).at[0, 0, 3, :].set(1.0)
  variables = model.init(jax.random.key(0), x, train=False)
  out = model.apply(variables, x, train=False, mutable=['intermediates'],
                    capture_intermediates=True)[1]['intermediates']['stem_conv']['__call__'][0]
  kernel = variables['params']['stem_conv']['kernel']  # 7x7x3x64; tap (row 3, col 6) sees (0,3)
  np.testing.assert_allclose(out[0, 0, 0], kernel[3, 6].sum(0), rtol=1e-5)


def test_grouped_batch_norm_normalises_each_group_separately():
  x = jnp.concatenate([jnp.full((2, 4, 4, 3), 1.0), jnp.full((2, 4, 4, 3), 5.0)])
  x = x + jax.random.normal(jax.random.key(7), x.shape)
  norm = models.GroupedBatchNorm(group_size=2, use_running_average=False)
  variables = norm.init(jax.random.key(0), x)
  y, state = norm.apply(variables, x, mutable=['batch_stats'])
  for group in (y[:2], y[2:]):
    np.testing.assert_allclose(np.asarray(group).mean((0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(group).std((0, 1, 2)), 1.0, atol=1e-3)
  group_means = np.asarray(x).reshape(2, 2, 4, 4, 3).mean((1, 2, 3))
  np.testing.assert_allclose(state['batch_stats']['mean'], 0.1 * group_means.mean(0),
                             rtol=1e-5)
  # With one group covering the batch it is exactly nn.BatchNorm.
  whole = models.GroupedBatchNorm(group_size=4, use_running_average=False, momentum=0.9)
  reference = nn.BatchNorm(use_running_average=False, momentum=0.9)
  a = whole.apply(variables, x, mutable=['batch_stats'])
  b = reference.apply(variables, x, mutable=['batch_stats'])
  np.testing.assert_allclose(a[0], b[0], atol=1e-4)
  np.testing.assert_allclose(a[1]['batch_stats']['var'], b[1]['batch_stats']['var'], rtol=1e-4)


def test_unknown_names_and_arguments_are_rejected_clearly():
  with pytest.raises(ValueError, match='resnet20.*resnet1202.*plain34'):
    models.create_model('resnet21', 10)
  with pytest.raises(ValueError, match='shortcutt'):
    models.create_model('resnet20', 10, shortcutt='B')
  with pytest.raises(ValueError, match="'A', 'B', 'C'|A, B, C"):
    models.create_model('resnet20', 10, shortcut='D').init(
        jax.random.key(0), input_for('resnet20'), train=False)


def test_every_named_model_has_a_family():
  # The paper's nets, and those that followed it (tests/test_model_zoo.py).
  followers = {
      'resnet164', 'resnet1001', 'preact_resnet110', 'preact_resnet164', 'preact_resnet1001',
      'wrn16_8', 'wrn28_10', 'wrn40_4', 'wide_resnet50_2', 'wide_resnet101_2',
      'resnext50_32x4d', 'resnext101_32x8d', 'resnext101_64x4d', 'resnet50d',
      *(f'preact_resnet{depth}' for depth in (18, 34, 50, 101, 152, 200))}
  assert set(models.MODEL_NAMES) == set(PAPER_PARAMS) | followers | {
      'plain20', 'plain32', 'plain44', 'plain56', 'plain110', 'plain18', 'plain34'}
  assert {models.model_family(name) for name in models.MODEL_NAMES} == {'cifar', 'imagenet'}
