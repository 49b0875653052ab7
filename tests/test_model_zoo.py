"""The nets that followed the paper against independent facts: parameter counts counted with
independent PyTorch code (PAPER.md), the multiply-adds torchvision publishes, and what the zoo's
names and options accept."""

import jax
import pytest
from flax.traverse_util import flatten_dict

from resnet_jax import models
from tests.test_models import abstract_variables, count, input_for, num_classes
from tools.model_table import multiply_adds

# PAPER.md, "Counted here with independent PyTorch code": CIFAR-10 nets with 10 classes,
# torchvision's with 1000; BN scale and bias included, running statistics excluded.
INDEPENDENT_PARAMS = {
    'preact_resnet164': 1_703_258, 'preact_resnet1001': 10_327_706,
    'wrn28_10': 36_479_194, 'wrn40_4': 8_949_210, 'wrn16_8': 10_961_370,
    'wide_resnet50_2': 68_883_240, 'wide_resnet101_2': 126_886_696,
    'resnext50_32x4d': 25_028_904, 'resnext101_32x8d': 88_791_336,
    'resnext101_64x4d': 83_455_272,
}
# torchvision's model pages, "GFLOPS" of the IMAGENET1K weights at 224x224 (multiply-adds: its
# ResNet-50 has 4.09, the cost section of PAPER.md).
TORCHVISION_MULTIPLY_ADDS = {'resnext50_32x4d': 4.23e9, 'resnext101_32x8d': 16.41e9,
                             'resnext101_64x4d': 15.46e9, 'wide_resnet50_2': 11.40e9}
RESNET50_PARAMS = 25_557_032  # PAPER.md, torchvision's count.
RESNET110_PARAMS = 1_727_962  # PAPER.md.


def params(name, **overrides):
  model = models.create_model(name, num_classes(name), **overrides)
  return count(abstract_variables(model, input_for(name))['params'])


@pytest.mark.parametrize('name', sorted(INDEPENDENT_PARAMS))
def test_parameter_counts_match_the_independent_counts(name):
  assert params(name) == INDEPENDENT_PARAMS[name]


@pytest.mark.parametrize('name', sorted(TORCHVISION_MULTIPLY_ADDS))
def test_multiply_adds_match_torchvision(name):
  # Counted on the unrolled net, whose every convolution is a module of its own.
  model = models.create_model(name, 1000, scan_blocks=False)
  assert multiply_adds(model, input_for(name)) == pytest.approx(
      TORCHVISION_MULTIPLY_ADDS[name], rel=0.005)


def test_resnet50d_is_resnet50_with_the_deep_stem_and_a_parameter_free_pool():
  # The 7x7 stem (64 filters) and its BatchNorm give way to 3x3 convolutions of 32, 32 and 64
  # filters, each with its BatchNorm; ResNet-D's average pool has no parameters.
  old_stem = 7 * 7 * 3 * 64 + 2 * 64
  deep_stem = 27 * 32 + 2 * 32 + 9 * 32 * 32 + 2 * 32 + 9 * 32 * 64 + 2 * 64
  assert params('resnet50d') == RESNET50_PARAMS - old_stem + deep_stem
  assert params('resnet50', avg_down=True) == RESNET50_PARAMS


def test_preact_resnet110_has_the_convolutions_and_the_parameter_count_of_resnet110():
  # Option A, as the paper's ResNet-110. Its BatchNorms move: the stem's (16 channels) goes,
  # one over the last 64 channels comes before the pool, and the first unit of stages 2 and 3
  # normalises its input (16, 32 channels) where the original normalises its output (32, 64):
  # -2x16 + 2x64 - 2x16 - 2x32 = 0.
  assert params('preact_resnet110') == RESNET110_PARAMS
  kernels = lambda name: [leaf.shape for path, leaf in flatten_dict(abstract_variables(
      models.create_model(name, 10, scan_blocks=False), input_for(name))['params']).items()
                          if path[-1] == 'kernel']
  assert sorted(kernels('preact_resnet110')) == sorted(kernels('resnet110'))


@pytest.mark.parametrize('depth', [164, 1001])
def test_the_original_and_preactivation_nets_share_every_convolution(depth):
  def kernels(name):
    tree = abstract_variables(models.create_model(name, 10, scan_blocks=False), input_for(name))
    return {path: leaf.shape for path, leaf in flatten_dict(tree['params']).items()
            if path[-1] == 'kernel' and 'proj_bn' not in path}
  original, preact = kernels(f'resnet{depth}'), kernels(f'preact_resnet{depth}')
  assert original == preact
  # 9n + 2 weighted layers: three convolutions per block, the stem and the classifier.
  assert len([p for p in original if 'proj_conv' not in p]) == depth


def test_wide_resnets_are_named_by_depth_and_widening_factor():
  assert models.is_model_name('wrn22_8') and models.model_family('wrn22_8') == 'cifar'
  model = models.create_model('wrn22_8', 10)
  assert (model.stage_sizes, model.widths) == ((3, 3, 3), (128, 256, 512))
  for name in ('wrn21_8', 'wrn4_2', 'wrn16_0', 'wrn'):
    assert not models.is_model_name(name)
    with pytest.raises(ValueError, match=r'wrn\{depth\}_\{k\} for any depth 6n \+ 4'):
      models.create_model(name, 10)


def test_torchvision_nets_stride_their_3x3_convolution():
  for name in ('wide_resnet50_2', 'resnext50_32x4d', 'resnet50d', 'preact_resnet50'):
    assert models.create_model(name, 1000).bottleneck_stride_on == '3x3'


@pytest.mark.parametrize('name, overrides, message', [
    ('plain20', {'drop_path_rate': 0.1}, 'stochastic depth drops residual branches'),
    ('resnet20', {'deep_stem': True}, 'deep_stem=True replaces the ImageNet stem'),
    ('resnet34', {'avg_down': True, 'shortcut': 'A'}, 'option A has none'),
    ('resnet20', {'dropout_rate': 1.0}, r'dropout_rate=1.0 must be in \[0, 1\)'),
])
def test_options_that_do_not_fit_the_net_are_refused(name, overrides, message):
  model = models.create_model(name, 10, **overrides)
  with pytest.raises(ValueError, match=message):
    model.init(jax.random.key(0), input_for(name), train=False)
  problems = models.config_problems({'name': name, **overrides})
  assert len(problems) == 1 and problems[0].startswith('model.') and name in problems[0]

