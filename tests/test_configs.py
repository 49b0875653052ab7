"""configs/imagenet.py:MODEL[,OPTION]: every ImageNet net, its shortcut options and recipes, the
r50 alias; the warm-up, intervals and optimizer settings every config gets and its plan
(``run_plan.resolve``) checks."""

import functools
import importlib
import math
import pathlib
import re

import flax
import pytest

import configs
from configs import cifar10, cifar100, digits, imagenet, imagenet_r50
from resnet_jax import errors, learning_rate, workdirs
from tests.harness import plan_of, rate_of


def test_every_imagenet_net_has_a_valid_config():
  followers = {'wide_resnet50_2', 'wide_resnet101_2', 'resnext50_32x4d', 'resnext101_32x8d',
               'resnext101_64x4d', 'resnet50d',
               *(f'preact_resnet{depth}' for depth in (18, 34, 50, 101, 152, 200))}
  assert set(imagenet.MODELS) == {'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152',
                                  'plain18', 'plain34'} | followers
  for model in imagenet.MODELS:
    config = imagenet.get_config(model)
    assert (config.model.name, config.dataset.name, config.model.shortcut) == (
        model, 'imagenet2012', None)
    # Each net strides where its source does: the paper's on the 1x1, the others' on the 3x3.
    assert config.model.bottleneck_stride_on == ('3x3' if model in followers else '1x1')
    plan_of(config, devices=8, processes=1)


def test_resnet_d_options_apply_to_any_imagenet_net():
  config = imagenet.get_config('resnext50_32x4d,deep_stem,avg_down')
  assert (config.model.deep_stem, config.model.avg_down) == (True, True)
  plan_of(config, devices=8, processes=1)
  config = imagenet.get_config('resnet34,A,avg_down')
  with pytest.raises(errors.ConfigError, match=r'model.avg_down=True pools before a projection '
                     r"shortcut.*\(model.name='resnet34'\)"):
    plan_of(config, devices=8, processes=1)


def test_cifar_configs_give_each_net_its_papers_recipe():
  # "Identity Mappings" trains with the paper's recipe, warming up every net of its comparison.
  for model in ('resnet164', 'resnet1001', 'preact_resnet110', 'preact_resnet164',
                'preact_resnet1001'):
    config = cifar10.get_config(model)
    assert (learning_rate.network_warmup_steps(config), config.total_steps) == (400, 64_000), model
    assert config.optimizer.lr_boundaries == (32_000, 48_000)
  # Wide ResNets: 200 epochs, Nesterov, weight decay 5e-4, lr x0.2 at 60, 120 and 160.
  for dataset in (cifar10, cifar100):
    config = dataset.get_config('wrn28_10,dropout')
    opt = config.optimizer
    assert (config.total_epochs, config.total_steps, config.batch_size) == (200.0, 0, 128)
    assert (opt.nesterov, opt.momentum, opt.weight_decay, opt.learning_rate) == (
        True, 0.9, 5e-4, 0.1)
    assert (opt.lr_boundaries, opt.lr_boundaries_unit, opt.lr_decay_factor) == (
        (60, 120, 160), 'epochs', 0.2)
    assert learning_rate.network_warmup_steps(config) == 0 and config.model.dropout_rate == 0.3
    plan_of(config, devices=1, processes=1)
  assert cifar10.get_config('wrn16_8').model.dropout_rate is None  # The net's own: none.
  with pytest.raises(ValueError, match="dropout is the wide ResNets' option; resnet56 is not"):
    cifar10.get_config('resnet56,dropout')


def test_the_option_picks_the_shortcut_of_table_3():
  for option in 'ABC':
    assert imagenet.get_config(f'resnet34,{option}').model.shortcut == option
  assert imagenet_r50.get_config('C').model.shortcut == 'C'


def test_plateau_option_is_the_papers_schedule():
  config = imagenet.get_config('resnet34,C,plateau')
  assert (config.optimizer.schedule, config.total_epochs, config.model.shortcut) == (
      'plateau', 120.0, 'C')
  # 60x10^4 iterations of 256 images are 120 epochs of ImageNet's 1,281,167 training images.
  assert round(60e4 * 256 / 1_281_167) == 120
  plan_of(config, devices=8, processes=1)


def test_imagenet_r50_is_an_alias_of_imagenet_resnet50():
  assert imagenet_r50.get_config().to_dict() == imagenet.get_config('resnet50').to_dict()


@pytest.mark.parametrize('module, arg, message', [
    (imagenet, 'resnet20', "imagenet.py:resnet20: 'resnet20' is not a net of this config; use one "
     "of resnet18, .*plain34"),
    (imagenet, 'resnet50,D', r"options \['D'\] not understood; options are A, B, C, plateau"),
    (imagenet, 'resnet50,A,B', r"options \['A', 'B'\] not understood.*at most one of A, B, C"),
    (cifar10, 'resnet50', "'resnet50' is not a net of this config; use one of resnet20, "),
    (cifar10, 'resnet56,valid', r"options \['valid'\] not understood; options are validation"),
    (digits, 'plain20,C', r"digits.py:plain20,C: options \['C'\] not understood; options are none"),
])
def test_bad_arguments_say_what_is_valid(module, arg, message):
  with pytest.raises(ValueError, match=message):
    module.get_config(arg)


def test_cifar10_validation_option_is_the_papers_45k_5k_split():
  config = cifar10.get_config('resnet110,validation')
  assert (config.model.name, config.dataset.train_split, config.dataset.eval_split) == (
      'resnet110', 'train[:45000]', 'train[45000:]')


def test_cifar100_takes_the_cifar10_recipe_unchanged():
  for arg in ('resnet110', 'resnet56,validation'):
    config = cifar100.get_config(arg)
    # The paper's CIFAR-10 recipe: 64k iterations of 128, lr 0.1 /10 at 32k and 48k, pad 4, flips.
    assert (config.dataset.name, config.total_steps, config.batch_size) == ('cifar100', 64_000, 128)
    assert (config.optimizer.learning_rate, tuple(config.optimizer.lr_boundaries)) == (
        0.1, (32_000, 48_000))
    same = cifar10.get_config(arg)
    same.dataset.name = 'cifar100'
    assert config.to_dict() == same.to_dict()
    plan_of(config, devices=1, processes=1)
  with pytest.raises(ValueError, match="cifar100.py:resnet50: 'resnet50' is not a net"):
    cifar100.get_config('resnet50')


def test_a_workdir_of_the_other_schedule_is_another_experiment():
  steps_config = imagenet.get_config('resnet50')
  fields = workdirs.IDENTITY_FIELDS
  assert workdirs.changed_fields(steps_config, imagenet.get_config('resnet50'), fields) == []
  assert workdirs.changed_fields(steps_config, imagenet.get_config('resnet50,plateau'),
                                   fields) == ["optimizer.schedule: 'steps' -> 'plateau'"]


def test_lars_option_is_the_mlperf_large_batch_recipe():
  config = imagenet.get_config('resnet50,lars')
  plan_of(config, devices=8, processes=1)
  opt = config.optimizer
  assert (config.batch_size, config.total_epochs, config.label_smoothing) == (4096, 42.0, 0.1)
  assert (opt.name, opt.lars_trust_coefficient, opt.weight_decay, opt.weight_decay_on) == (
      'lars', 0.001, 2e-4, 'kernels')
  assert (opt.schedule, opt.decay_power, opt.end_learning_rate) == ('polynomial', 2.0, 1e-4)
  # The reference's 10.0 at batch 4,096, reached over 5 epochs from the base rate.
  rate = plan_of(config, devices=8).learning_rate
  assert rate.peak == pytest.approx(10.0)
  assert (rate.warmup, rate.warmup_steps) == ('ramp', 5 * (1_281_167 // 4096))


CONFIG_FILES = sorted(p.stem for p in pathlib.Path(configs.__file__).parent.glob('*.py')
                      if p.stem not in ('__init__', 'default', 'arguments', 'recipes'))


def test_every_config_ramps_up_to_a_rate_scaled_above_its_base_by_default():
  scaled = []
  for name in CONFIG_FILES:
    config = importlib.import_module(f'configs.{name}').get_config()
    config.batch_size = 4096
    steps_per_epoch = 1_281_167 // 4096
    rate = rate_of(config, steps_per_epoch)
    schedule = learning_rate.schedule(rate)
    if rate.peak > config.optimizer.learning_rate:
      scaled.append(name)
      assert (rate.warmup, rate.warmup_steps) == ('ramp', round(5 * steps_per_epoch)), name
      assert float(schedule(0)) == pytest.approx(config.optimizer.learning_rate), name
      assert float(schedule(rate.warmup_steps)) == pytest.approx(rate.peak), name
    else:
      assert rate.warmup != 'ramp', name
  assert scaled == ['imagenet', 'imagenet_r50']  # digits and cifar10 do not scale the rate.


@pytest.mark.parametrize('batch, steps_per_epoch', [(256, 5004), (4096, 312)])
def test_plateau_patience_and_evaluations_count_epochs_at_every_batch(batch, steps_per_epoch):
  config = imagenet.get_config('resnet50,plateau')
  config.batch_size = batch
  assert 1_281_167 // batch == steps_per_epoch
  plan = plan_of(config, devices=8)
  # By hand: an evaluation and a checkpoint each epoch; a patience of 5 epochs is 5 of them.
  assert (plan.steps_per_epoch, plan.eval_every, plan.checkpoint_every,
          plan.learning_rate.plateau_patience) == (steps_per_epoch, steps_per_epoch,
                                                   steps_per_epoch, 5)
  # Evaluations every 2 epochs: 3 of them (6 epochs) are the first to cover 5 epochs.
  config.eval_every_epochs = 2.0
  plan = plan_of(config, devices=8)
  assert (plan.eval_every, plan.learning_rate.plateau_patience) == (2 * steps_per_epoch, 3)
  config.optimizer.plateau_patience_epochs = 0.5  # At least one evaluation.
  assert plan_of(config, devices=8).learning_rate.plateau_patience == 1


def test_step_intervals_and_patience_stay_as_given():
  config = digits.get_config()
  config.optimizer.plateau_patience = 7
  plan = plan_of(config)
  assert (plan.steps_per_epoch, plan.eval_every, plan.checkpoint_every,
          plan.learning_rate.plateau_patience) == (1500 // 64, 92, 92, 7)


def with_overrides(config, overrides):
  """``config`` after ``--config.KEY=VALUE`` overrides (top-level or optimizer fields)."""
  for key, value in overrides.items():
    *parents, field = key.split('.')
    (config.optimizer if parents else config)[field] = value
  return config


@pytest.mark.parametrize('overrides, message', [
    ({'eval_every_steps': 100}, 'exactly one of eval_every_steps and eval_every_epochs'),
    ({'checkpoint_every_epochs': 0.0}, 'exactly one of checkpoint_every_steps and'),
    ({'optimizer.schedule': 'plateau', 'optimizer.plateau_patience': 3},
     'exactly one of optimizer.plateau_patience and optimizer.plateau_patience_epochs'),
    ({'eval_every_epochs': -1.0}, 'must not be negative'),
])
def test_the_plan_refuses_an_interval_in_both_or_neither_unit(overrides, message):
  config = with_overrides(imagenet.get_config('resnet50'), overrides)
  with pytest.raises(errors.ConfigError, match=message):
    plan_of(config, devices=8, processes=1)


@pytest.mark.parametrize('overrides, message', [
    ({'optimizer.name': 'adam'}, "optimizer.name='adam' is not an optimizer; use one of 'sgd'"),
    ({'optimizer.schedule': 'linear'}, "optimizer.schedule='linear' is not a schedule"),
    ({'optimizer.scaling_warmup_epochs': -1.0}, 'scaling_warmup_epochs=-1.0 must not be negative'),
    ({'optimizer.scaling_warmup_epochs': 90.0}, 'must be shorter than the run'),
    ({'label_smoothing': 1.0}, r'label_smoothing=1.0 must be in \[0, 1\)'),
    ({'label_smoothing': -0.1}, r'label_smoothing=-0.1 must be in \[0, 1\)'),
    ({'optimizer.name': 'lars'}, 'set --config.optimizer.weight_decay_on=kernels'),
    ({'optimizer.schedule': 'cosine', 'optimizer.end_learning_rate': 2.0},
     'end_learning_rate=2.0 must be at least 0 and below the rate it decays from, 0.4'),
    ({'optimizer.decay_power': 0.0}, 'decay_power=0.0 must be positive'),
    ({'optimizer.lars_trust_coefficient': 0.0}, 'lars_trust_coefficient=0.0 must be positive'),
    # The paper's constant warm-up and the ramp to a scaled rate, both at once.
    ({'optimizer.warmup_steps': 400}, 'Two warm-ups apply'),
])
def test_the_plan_refuses_bad_optimizer_settings_with_what_to_do(overrides, message):
  config = with_overrides(imagenet.get_config('resnet50'), {'batch_size': 1024, **overrides})
  with pytest.raises(errors.ConfigError, match=message):
    plan_of(config, devices=8, processes=1)


def float_fields(config) -> list[str]:
  """The dotted names of the fields of ``config`` that hold a float."""
  return sorted('.'.join(path) for path, value in
                flax.traverse_util.flatten_dict(config.to_dict()).items()
                if isinstance(value, float))


@pytest.mark.parametrize('value', [math.inf, -math.inf, math.nan])
def test_the_plan_refuses_a_non_finite_number_in_any_field_by_its_name(value):
  fields = float_fields(digits.get_config())
  assert {'optimizer.learning_rate', 'total_epochs', 'model.bn_epsilon'} <= set(fields)
  for field in fields:
    config = digits.get_config()
    *parents, name = field.split('.')
    functools.reduce(lambda c, key: c[key], parents, config)[name] = value
    with pytest.raises(errors.ConfigError,
                       match=re.escape(f'{field}={value} is not a finite number')):
      plan_of(config, devices=1, processes=1)
  config = digits.get_config()  # A tuple of numbers, and a field that is None by default.
  config.optimizer.lr_boundaries = (4.0, value)
  config.checkpoint_every_epochs = value
  with pytest.raises(errors.ConfigError) as refusal:
    plan_of(config, devices=1, processes=1)
  assert f'optimizer.lr_boundaries=(4.0, {value}) is not a finite number' in str(refusal.value)
  assert f'checkpoint_every_epochs={value} is not a finite number' in str(refusal.value)


def test_both_warmups_are_fine_where_only_one_applies():
  config = imagenet.get_config('resnet50')  # Batch 256: the rate is not scaled up.
  config.optimizer.warmup_steps = 400
  plan_of(config, devices=8, processes=1)
  config.batch_size = 1024
  config.optimizer.scaling_warmup_epochs = 0.0
  plan_of(config, devices=8, processes=1)


def test_gradients_are_averaged_in_float32_unless_bfloat16_is_asked_for():
  config = imagenet.get_config('resnet50')
  assert (config.model.dtype, config.gradient_allreduce_dtype) == ('bfloat16', 'float32')
  config.gradient_allreduce_dtype = 'bfloat16'
  plan_of(config, devices=8, processes=1)
  config.gradient_allreduce_dtype = 'float16'
  with pytest.raises(errors.ConfigError, match="gradient_allreduce_dtype='float16'; use"):
    plan_of(config, devices=8, processes=1)
