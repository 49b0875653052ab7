"""The named recipes (configs/recipes.py): each held to its source's published settings, planned
as a run, trained a few steps on small data; the digits ablation's runs; what ``apply`` refuses.
"""

import math

import numpy as np
import pytest

from configs import cifar10, digits, imagenet, recipes
from experiments import sweeps
from resnet_jax import events, run_plan, train
from resnet_jax.data import registry
from tests.test_train_mock_data import short, twenty_examples

RECIPES = ('torchvision_v2', 'rsb_a1', 'rsb_a2', 'rsb_a3')


def plan(config, devices=8):
  return run_plan.resolve(config, devices=devices, processes=1, facts=registry.get)


# The sources' settings, typed from them (configs/recipes.py names each source): batch, epochs,
# peak rate at that batch, optimizer, weight decay, train / eval-resize / eval-crop sizes.
PUBLISHED = {
    'torchvision_v2': (1024, 600, 0.5, 'sgd', 2e-5, 176, 232, 224),
    'rsb_a1': (2048, 600, 5e-3, 'lamb', 0.01, 224, 235, 224),
    'rsb_a2': (2048, 300, 5e-3, 'lamb', 0.02, 224, 235, 224),
    'rsb_a3': (2048, 100, 8e-3, 'lamb', 0.02, 160, 235, 224),
}


@pytest.mark.parametrize('name', RECIPES)
def test_each_imagenet_recipe_plans_with_its_sources_settings(name):
  config = imagenet.get_config(f'resnet50,{name}')
  batch, epochs, peak, optimizer, decay, train_size, resize, crop = PUBLISHED[name]
  resolved = plan(config)
  # ImageNet's 1,281,167 training images at the recipe's batch.
  assert resolved.steps_per_epoch == 1_281_167 // batch
  assert resolved.total_steps == round(epochs * resolved.steps_per_epoch)
  assert resolved.learning_rate.peak == pytest.approx(peak)
  assert config.recipe == name and config.optimizer.name == optimizer
  assert config.optimizer.weight_decay == decay and config.optimizer.weight_decay_on == 'kernels'
  assert config.optimizer.schedule == 'cosine' and config.optimizer.linear_warmup_epochs == 5
  ds = config.dataset
  assert (ds.image_size, ds.eval_resize, ds.eval_crop) == (train_size, resize, crop)
  assert ds.train_crop == 'random_resized' and config.mixup.cutmix_alpha == 1.0
  assert config.model.bottleneck_stride_on == '3x3'  # torchvision's and timm's ResNet-50.
  if name == 'torchvision_v2':
    assert (config.label_smoothing, config.mixup.mixup_alpha, ds.random_erasing) == (0.1, 0.2,
                                                                                       0.1)
    assert ds.auto_augment == 'trivial_augment_wide' and config.loss == 'cross_entropy'
    # torchvision's EMA decay 0.99998 per image-step, adjusted to 32 steps of 1,024 images over
    # 600 epochs: alpha = 2e-5 x 1024 x 32 / 600.
    assert 1 - config.ema.decay == pytest.approx(2e-5 * 1024 * 32 / 600, rel=1e-3)
  else:
    assert config.loss == 'binary_cross_entropy' and config.bce_target_threshold == 0.2
    assert ds.auto_augment == 'rand_augment' and ds.auto_augment_ops == 2
    assert ds.auto_augment_magnitude == (6 if name == 'rsb_a3' else 7)
    assert config.mixup.mixup_alpha == (0.2 if name == 'rsb_a1' else 0.1)
    assert config.model.drop_path_rate == (0.0 if name == 'rsb_a3' else 0.05)
    assert ds.eval_resize == math.floor(224 / 0.95)  # timm's resize for a crop ratio of 0.95.


def test_the_paper_stays_the_default_and_recipes_exclude_each_other():
  assert imagenet.get_config('resnet50').recipe is None
  assert cifar10.get_config('resnet20').recipe is None
  with pytest.raises(ValueError, match='at most one of lars, plateau, torchvision_v2'):
    imagenet.get_config('resnet50,torchvision_v2,rsb_a1')


def test_the_cifar_baseline_trains_200_epochs_down_a_cosine():
  config = cifar10.get_config('resnet56,modern')
  resolved = plan(config, devices=1)
  assert resolved.total_steps == 200 * (50_000 // 128)
  assert config.optimizer.schedule == 'cosine' and config.optimizer.nesterov
  assert (config.mixup.cutmix_alpha, config.mixup.prob, config.recipe) == (1.0, 0.5,
                                                                            'cifar_modern')


def test_apply_refuses_a_field_the_config_lacks_and_a_part_the_recipe_lacks():
  config = digits.get_config()
  with pytest.raises(KeyError, match='mixup_alfa'):
    recipes.apply(config, 'typo', {'mixing': {'mixup.mixup_alfa': 0.2}})
  assert 'mixup_alfa' not in config.mixup and not config.is_locked
  with pytest.raises(ValueError, match="Parts \\['dropout'\\] are not in the recipe"):
    recipes.fields('digits_modern', recipes.DIGITS_MODERN, without=('dropout',))


def test_the_ablation_leaves_out_one_part_at_a_time_and_every_run_plans():
  runs = {run.name: run for run in sweeps.SWEEPS['recipe_ablation:digits']}
  parts = list(recipes.DIGITS_MODERN)
  assert sorted(runs) == sorted(f'{net}_{variant}' for net in ('plain20', 'resnet20')
                                for variant in ['paper', 'modern',
                                                *(f'modern-{p}' for p in parts)])
  modern = runs['resnet20_modern'].overrides
  for part in parts:
    left_out = runs[f'resnet20_modern-{part}'].overrides
    assert left_out['recipe'] == f'digits_modern -{part}'
    assert set(modern) - set(left_out) == set(recipes.DIGITS_MODERN[part])
  for run in runs.values():
    config = digits.get_config(run.config.split(':')[1])
    config.update_from_flattened_dict(run.overrides)
    assert plan(config, devices=1).total_steps == 16 * 23


@pytest.mark.e2e  # Compiles five training programs in process (minutes on 2 cores).
@pytest.mark.parametrize('arg', [f'resnet18,{name}' for name in RECIPES] + ['cifar:modern'])
def test_each_recipe_trains_a_few_steps_on_small_data(arg, tmp_path):
  if arg.startswith('cifar'):
    name, config, splits, size = 'cifar10', cifar10.get_config('resnet20,modern'), ('train',
                                                                                     'test'), 32
  else:
    name, config, splits, size = ('imagenet2012', imagenet.get_config(arg),
                                  ('train', 'validation'), 32)
    config.dataset.update(eval_resize=36, eval_crop=32)
  config = short(config, str(tmp_path / 'tfds'), size)
  config.optimizer.linear_warmup_epochs = 0.0
  if config.ema.decay:
    config.ema.every = 1
  with twenty_examples(name, str(tmp_path / 'tfds'), splits):
    state = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert int(state.step) == 3
  result = events.read_results(str(tmp_path / 'run'))[-1]
  assert math.isfinite(result['eval_loss'])
  assert np.isfinite(events.read_scalars(str(tmp_path / 'run'))['train_loss'][1]).all()
