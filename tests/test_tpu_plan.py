"""tools/tpu_plan.py compiles the real train and eval calls for a multi-host TPU slice.

Its figures are checked against facts counted by hand from the network: ResNet-20's multiply-adds
(the paper, Section 4.2), its parameter count, its BatchNorm layers. Needs libtpu (requirements-tpu.txt).
"""

import pytest

pytestmark = pytest.mark.e2e

pytest.importorskip('libtpu', reason='compiling for TPUs needs libtpu: pip install -r '
                    'requirements-tpu.txt')

from configs import cifar10, imagenet  # pylint: disable=wrong-import-position
from tools import tpu_plan  # pylint: disable=wrong-import-position

TOPOLOGY = 'v5e:2x4'  # 8 chips, 2 processes: the smallest multi-host v5e slice libtpu describes.
CHIPS = 8
PER_CHIP = 8  # At 2 per chip XLA:TPU counted 27% more eval FLOPs than the hand count.
RESNET20_MULTIPLY_ADDS = 40.6e6  # One 32x32 forward pass (the paper, Section 4.2).
# ResNet-20's parameters, by hand: convs 432 + 6*2,304 + 4,608 + 5*9,216 + 18,432 + 5*36,864,
# the classifier 650, and the scale and bias of its 19 BatchNorm layers (16x7, 32x6, 64x6
# channels) 1,376; the paper's Table 6 says 0.27M.
RESNET20_PARAMS = 269_722
BATCHNORM_LAYERS = 19  # The stem's and two per block, 3 stages of 3 blocks.


def resnet20_config(bn_group_size, dtype='float32'):
  config = cifar10.get_config('resnet20')
  config.batch_size = config.eval_batch_size = CHIPS * PER_CHIP
  config.model.bn_group_size = bn_group_size
  config.model.dtype = dtype
  return config


@pytest.fixture(scope='module')
def global_bn():
  return tpu_plan.plan(resnet20_config(0), TOPOLOGY)


@pytest.fixture(scope='module')
def grouped_bn():
  return tpu_plan.plan(resnet20_config(PER_CHIP // 2), TOPOLOGY, parts=('train',))


@pytest.fixture(scope='module')
def bfloat16_compute():
  """bfloat16 convolutions, their gradients all-reduced in each of the two dtypes."""
  plans = {}
  for reduce_dtype in ('float32', 'bfloat16'):
    config = resnet20_config(PER_CHIP // 2, 'bfloat16')
    config.gradient_allreduce_dtype = reduce_dtype
    plans[reduce_dtype] = tpu_plan.plan(config, TOPOLOGY, parts=('train',))
  return plans


def test_the_slice_is_described(global_bn):
  assert (global_bn['chips'], global_bn['processes']) == (CHIPS, 2)
  assert global_bn['device_kind'] == 'TPU v5 lite'


def test_the_command_ends_with_whether_each_part_fits(global_bn):
  train, evaluation, chip = global_bn['train'], global_bn['eval'], global_bn['chip']
  assert train['fits'] and evaluation['fits']
  assert tpu_plan.report(global_bn).splitlines()[-1] == (
      f"Planned resnet20 on {TOPOLOGY}: train fits ({tpu_plan._gb(train['hbm_bytes']['total'])} "
      f"of {tpu_plan._gb(chip['hbm_bytes'])} per chip), "
      f"~{train['estimate']['images_per_s']:,.0f} images/s at peak; eval fits "
      f"({tpu_plan._gb(evaluation['hbm_bytes']['total'])} of {tpu_plan._gb(chip['hbm_bytes'])} "
      'per chip).')


def test_flops_match_the_hand_count(global_bn):
  """2 FLOPs per multiply-add; a train step ~3 forward passes. XLA's count is a few % low (here
  ~6.5%), as XLA:CPU's is (tests/test_benchmark.py)."""
  forward = 2 * RESNET20_MULTIPLY_ADDS * PER_CHIP
  assert global_bn['eval']['flops'] == pytest.approx(forward, rel=0.08)
  assert global_bn['train']['flops'] == pytest.approx(3 * forward, rel=0.08)
  assert 2.8 < global_bn['train']['flops'] / global_bn['eval']['flops'] < 3.2


def test_global_batchnorm_reduces_once_per_layer_across_the_slice(global_bn):
  reduces = global_bn['train']['collectives']['all-reduce']
  assert reduces['count'] >= BATCHNORM_LAYERS
  assert set(global_bn['train']['collectives']) == {'all-reduce'}  # Pure data parallelism.


def test_grouped_batchnorm_reduces_only_the_gradients(grouped_bn, global_bn):
  """Statistics of groups within a chip need no collective: XLA merges what is left into a few
  all-reduces carrying the float32 gradients (and a few scalars of metrics and statistics)."""
  reduces = grouped_bn['train']['collectives']['all-reduce']
  assert reduces['count'] <= 3
  assert reduces['bytes'] == pytest.approx(4 * RESNET20_PARAMS, rel=0.02)
  assert global_bn['train']['collectives']['all-reduce']['bytes'] > reduces['bytes']


def test_gradients_cross_the_chips_in_float32_unless_bfloat16_is_asked_for(
    global_bn, grouped_bn, bfloat16_compute):
  """4 bytes per parameter in float32 runs and, by default, in bfloat16 runs; 2 on request."""
  in_float32 = {'bytes': 4 * RESNET20_PARAMS, 'bytes_per_param': 4.0, 'unmatched_params': 0}
  assert global_bn['params'] == RESNET20_PARAMS
  assert global_bn['train']['gradient_allreduce'] == in_float32
  assert grouped_bn['train']['gradient_allreduce'] == in_float32
  assert bfloat16_compute['float32']['train']['gradient_allreduce'] == in_float32
  assert bfloat16_compute['bfloat16']['train']['gradient_allreduce'] == {
      'bytes': 2 * RESNET20_PARAMS, 'bytes_per_param': 2.0, 'unmatched_params': 0}
  assert 'gradients all-reduced in bfloat16' in tpu_plan.report(bfloat16_compute['bfloat16'])
  assert '4.00 bytes per parameter' in tpu_plan.report(bfloat16_compute['float32'])


def test_memory_and_roofline_are_per_chip(global_bn):
  train = global_bn['train']
  hbm = train['hbm_bytes']
  assert train['fits'] and 0 < hbm['total'] < global_bn['chip']['hbm_bytes']
  # Parameters, BatchNorm statistics and momentum, float32, replicated on every chip.
  assert hbm['arguments'] >= 4 * 2 * RESNET20_PARAMS
  estimate = train['estimate']
  assert estimate['step_s'] == pytest.approx(max(estimate['compute_s'], estimate['memory_s']))
  assert estimate['images_per_s'] == pytest.approx(CHIPS * PER_CHIP / estimate['step_s'])


def test_collectives_are_read_from_the_hlo_text():
  """Lines as XLA:TPU prints them; bytes counted by hand."""
  hlo = '''
  %all-reduce.2 = (f32[128,128]{1,0:T(8,128)S(1)}, f32[128]{0:T(128)S(1)}) all-reduce(%a, %b)
  %all-gather-start = (bf16[4,8]{1,0}, bf16[32,8]{1,0}) all-gather-start(%c)
  %all-gather-done = bf16[32,8]{1,0} all-gather-done(%all-gather-start)
  '''
  assert tpu_plan.collectives(hlo) == {
      'all-reduce': {'count': 1, 'bytes': 128 * 128 * 4 + 128 * 4},
      'all-gather': {'count': 1, 'bytes': 32 * 8 * 2}}


def test_gradients_are_found_among_the_all_reduced_arrays_by_shape():
  """Statistics of BatchNorm's shape [C] beside its gradients: the gradient is the smaller one;
  a parameter whose shape no all-reduce holds is counted apart."""
  hlo = '''
  %all-reduce.7 = (f32[16]{0:T(128)S(1)}, f32[16]{0:T(128)S(1)}) all-reduce(%a, %b)
  %all-reduce.8 = (bf16[16]{0:T(256)}, bf16[3,3,4,16]{3,2,1,0:T(8,128)}, bf16[16]{0}) all-reduce(%c)
  '''
  kernel, scale, bias, classifier = (3, 3, 4, 16), (16,), (16,), (10,)
  assert tpu_plan.gradient_allreduce(hlo, [kernel, scale, bias, classifier]) == {
      'bytes': 2 * (3 * 3 * 4 * 16 + 16 + 16), 'bytes_per_param': 2.0, 'unmatched_params': 10}


def test_an_unknown_chip_is_refused_before_compiling():
  with pytest.raises(tpu_plan.PlanError, match='CHIP:SHAPE'):
    tpu_plan.plan(resnet20_config(0), 'v9z:2x2')


def test_batches_a_slice_cannot_split_are_raised_and_said():
  config = imagenet.get_config('resnet50')  # 256 in groups of 32, eval 1000: written for 8 GPUs.
  notes = tpu_plan.fit_batches(config, chips=16)
  assert (config.batch_size, config.eval_batch_size) == (16 * 32, 63 * 16)
  assert any('--config.batch_size=512' in note for note in notes)
  assert any('--config.eval_batch_size=1008' in note for note in notes)
  assert tpu_plan.fit_batches(config, chips=16) == []  # Already fitting: unchanged.


def test_a_scanned_preactivation_net_plans_with_float32_gradient_all_reduces():
  """configs/cifar10.py:preact_resnet164, whose three stages of 18 blocks run as scans (their
  variables stacked): XLA:TPU compiles its train call for the slice, it fits, and the gradients,
  stacked ones included, cross the chips in float32 (PAPER.md's independent count)."""
  config = cifar10.get_config('preact_resnet164')
  config.batch_size = config.eval_batch_size = CHIPS * PER_CHIP
  plan = tpu_plan.plan(config, TOPOLOGY, parts=('train',))
  assert plan['params'] == 1_703_258 and plan['train']['fits']
  assert plan['train']['gradient_allreduce'] == {
      'bytes': 4 * 1_703_258, 'bytes_per_param': 4.0, 'unmatched_params': 0}


def test_mixing_binary_cross_entropy_and_lamb_plan_at_a_few_per_mille_more_flops(global_bn):
  """The neighbour of each chip's first example crosses the slice as one collective-permute of
  an image and its target row; the mixing and the loss add a few per mille of FLOPs."""
  config = resnet20_config(0)
  config.mixup.update(mixup_alpha=0.2, cutmix_alpha=1.0)
  config.update(loss='binary_cross_entropy', bce_target_threshold=0.2, label_smoothing=0.1)
  config.optimizer.update(name='lamb', weight_decay_on='kernels', grad_clip_norm=1.0,
                          scaling_warmup_epochs=0.0, linear_warmup_epochs=5.0)
  mixed = tpu_plan.plan(config, TOPOLOGY, parts=('train',))['train']
  assert mixed['fits']
  assert 'collective-permute' in mixed['collectives']
  assert mixed['flops'] == pytest.approx(global_bn['train']['flops'], rel=0.01)


@pytest.mark.parametrize('recipe', ['torchvision_v2', 'rsb_a1', 'rsb_a2', 'rsb_a3'])
def test_each_named_recipe_plans_for_the_slice(recipe):
  """Each named recipe's program (its loss, mixing, optimizer, EMA, stochastic depth) compiles
  for the slice and fits; ResNet-18 at 64 pixels and 32 images a chip keep the compile short."""
  config = imagenet.get_config(f'resnet18,{recipe}')
  config.batch_size = config.eval_batch_size = CHIPS * 32
  config.dataset.update(image_size=64, eval_resize=73, eval_crop=64)
  plan = tpu_plan.plan(config, TOPOLOGY, parts=('train',))
  assert plan['train']['fits'] and plan['per_chip_batch'] == 32
