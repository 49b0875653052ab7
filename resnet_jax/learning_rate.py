"""The learning rate of a run: its recipe resolved into numbers once, and the schedule of them.

One warm-up, then one decay. The warm-up is a linear ramp from the base rate to the rate scaled
for the batch (Goyal et al. 2017), a linear ramp from 0 to the rate (``linear_warmup_epochs`` or
``_steps``: torchvision's and timm's recipes, which start near 0), or the paper's constant
warm-up of its deepest CIFAR nets (ResNet-110: 0.01 for 400 iterations). The decay is
``optimizer.schedule``: ``'steps'`` divides the rate at fixed boundaries, ``'cosine'`` and
``'polynomial'`` take it to ``end_learning_rate`` at the last step, ``'plateau'`` divides it
when the held-out error stops improving (the paper's ImageNet rule). ``resolve`` turns the
config into a ``LearningRate`` of plain numbers in steps (the run's plan holds it); ``schedule``
and ``plateau`` build the optax pieces from it alone.
"""

import dataclasses
import math

import jax.numpy as jnp
import optax

SCHEDULES = ('steps', 'plateau', 'cosine', 'polynomial')
# The paper's warm-up (Sec. 4.2): its deepest CIFAR nets start at lr 0.01 for about 400
# iterations (until training error is below 80%), then go back to the schedule; "Identity
# Mappings" warms up every CIFAR net of its comparison so.
NETWORK_WARMUP_STEPS = {
    'resnet110': 400, 'resnet1202': 400, 'plain110': 400,
    **dict.fromkeys(('resnet164', 'resnet1001', 'preact_resnet110', 'preact_resnet164',
                     'preact_resnet1001'), 400)}


@dataclasses.dataclass(frozen=True)
class LearningRate:
  """The rate of every step, as numbers: what ``schedule`` and ``plateau`` are built from."""
  base: float                    # optimizer.learning_rate.
  peak: float                    # Scaled for the batch: the rate after the warm-up.
  warmup: str                    # 'none', 'constant' (at warmup_rate), 'ramp' (base -> peak)
                                 # or 'linear' (0 -> peak).
  warmup_steps: int
  warmup_rate: float
  decay: str                     # One of SCHEDULES.
  boundaries: tuple[int, ...]    # 'steps': the steps at which the rate is multiplied ...
  decay_factor: float            # ... by this ('plateau': on each plateau).
  end_rate: float                # 'cosine', 'polynomial': the rate at the last step.
  decay_power: float             # 'polynomial': (1 - t/T) ** decay_power.
  total_steps: int
  plateau_patience: int          # 'plateau': evaluations without improvement.
  plateau_threshold: float       # 'plateau': the absolute improvement that counts.


def network_warmup_steps(config) -> int:
  """``optimizer.warmup_steps``, or the network's own recipe where it is None (the recipe
  follows ``model.name``, so ``--config.model.name=resnet110`` trains as the paper did)."""
  steps = config.optimizer.warmup_steps
  return NETWORK_WARMUP_STEPS.get(config.model.name, 0) if steps is None else int(steps)


def scaled_rate(config) -> float:
  """``optimizer.learning_rate``, scaled linearly with the batch where ``lr_reference_batch``
  is set (0.1 x batch / 256 on ImageNet): the rate after any warm-up, before any decay."""
  opt = config.optimizer
  if opt.lr_reference_batch:
    return opt.learning_rate * config.batch_size / opt.lr_reference_batch
  return opt.learning_rate


def problems(config) -> list[str]:
  """What keeps the config's learning-rate recipe from giving a rate at every step."""
  opt, found = config.optimizer, []
  ramps = scaled_rate(config) > opt.learning_rate and opt.scaling_warmup_epochs
  if not opt.learning_rate > 0:
    found.append(f'optimizer.learning_rate={opt.learning_rate} must be positive.')
  if opt.lr_reference_batch < 0:
    found.append(f'optimizer.lr_reference_batch={opt.lr_reference_batch} must be 0 (no '
                 'scaling) or the batch size the learning rate is given for.')
  if (opt.warmup_steps or 0) < 0:
    found.append(f'optimizer.warmup_steps={opt.warmup_steps} must not be negative (None: the '
                 "network's recipe).")
  if network_warmup_steps(config) and not opt.warmup_learning_rate > 0:
    found.append(f'optimizer.warmup_learning_rate={opt.warmup_learning_rate} must be positive.')
  if opt.scaling_warmup_epochs < 0:
    found.append(f'optimizer.scaling_warmup_epochs={opt.scaling_warmup_epochs} must not be '
                 'negative (0: no ramp to the scaled rate).')
  elif ramps and network_warmup_steps(config):
    found.append(
        'Two warm-ups apply: the constant one of optimizer.warmup_steps='
        f'{network_warmup_steps(config)} (at {opt.warmup_learning_rate}) and the ramp of '
        f'optimizer.scaling_warmup_epochs={opt.scaling_warmup_epochs} to the rate scaled for '
        f'batch_size={config.batch_size} (lr_reference_batch={opt.lr_reference_batch}). A run '
        'starts with one of them: set --config.optimizer.warmup_steps=0 or '
        '--config.optimizer.scaling_warmup_epochs=0.')
  elif ramps and config.total_epochs and opt.scaling_warmup_epochs >= config.total_epochs:
    found.append(f'optimizer.scaling_warmup_epochs={opt.scaling_warmup_epochs} must be shorter '
                 f'than the run (total_epochs={config.total_epochs}).')
  found += _linear_warmup_problems(config, ramps)
  if opt.lr_boundaries_unit not in ('steps', 'epochs'):
    found.append(f"optimizer.lr_boundaries_unit={opt.lr_boundaries_unit!r}; use 'steps' or "
                 "'epochs'.")
  boundaries = list(opt.lr_boundaries)
  if boundaries != sorted(boundaries) or len(set(boundaries)) != len(boundaries) or any(
      b <= 0 for b in boundaries):
    found.append(f'optimizer.lr_boundaries={tuple(boundaries)} must be positive and strictly '
                 'increasing, e.g. (32000, 48000).')
  if opt.schedule not in SCHEDULES:
    found.append(f'optimizer.schedule={opt.schedule!r} is not a schedule; use one of '
                 f'{", ".join(map(repr, SCHEDULES))}.')
  elif opt.schedule in ('cosine', 'polynomial') and not (
      0 <= opt.end_learning_rate < scaled_rate(config)):
    found.append(f'optimizer.end_learning_rate={opt.end_learning_rate} must be at least 0 and '
                 f'below the rate it decays from, {scaled_rate(config):g}.')
  if not opt.decay_power > 0:
    found.append(f'optimizer.decay_power={opt.decay_power} must be positive.')
  if opt.plateau_threshold < 0:
    found.append(f'optimizer.plateau_threshold={opt.plateau_threshold} must not be negative.')
  if not 0 < opt.lr_decay_factor <= 1:
    found.append(f'optimizer.lr_decay_factor={opt.lr_decay_factor} must be in (0, 1].')
  return found


def _linear_warmup_problems(config, ramps) -> list[str]:
  """The warm-up from 0: in steps or in epochs, not negative, shorter than the run, alone."""
  opt = config.optimizer
  steps, epochs = opt.linear_warmup_steps, opt.linear_warmup_epochs
  if steps < 0 or epochs < 0:
    return [f'optimizer.linear_warmup_steps={steps} and optimizer.linear_warmup_epochs={epochs} '
            'must not be negative (0: no warm-up from 0).']
  if steps and epochs:
    return [f'The warm-up from 0 is in steps or in epochs: set one of '
            f'optimizer.linear_warmup_steps={steps} and optimizer.linear_warmup_epochs={epochs} '
            'to 0.']
  if not (steps or epochs):
    return []
  field = (f'optimizer.linear_warmup_steps={steps}' if steps
           else f'optimizer.linear_warmup_epochs={epochs}')
  other = ('the constant warm-up of optimizer.warmup_steps='
           f'{network_warmup_steps(config)} (--config.optimizer.warmup_steps=0)'
           if network_warmup_steps(config) else
           f'the ramp of optimizer.scaling_warmup_epochs={opt.scaling_warmup_epochs} to the rate '
           'scaled for the batch (--config.optimizer.scaling_warmup_epochs=0)' if ramps else '')
  if other:
    return [f'Two warm-ups apply: the one from 0 of {field} and {other}. A run starts with one '
            'of them: switch the other off.']
  run = config.total_steps if steps else config.total_epochs
  if run and (steps or epochs) >= run:
    return [f'{field} must be shorter than the run ('
            f'{"total_steps" if steps else "total_epochs"}={run}).']
  return []


def resolve(config, *, steps_per_epoch: int, total_steps: int, eval_every: int) -> LearningRate:
  """The config's recipe in numbers, for a run of ``total_steps`` steps of ``steps_per_epoch``
  per epoch that evaluates every ``eval_every`` steps (``problems`` found nothing)."""
  opt = config.optimizer
  peak = scaled_rate(config)
  ramp = round(opt.scaling_warmup_epochs * steps_per_epoch) if peak > opt.learning_rate else 0
  constant = network_warmup_steps(config)
  linear = (round(opt.linear_warmup_epochs * steps_per_epoch) if opt.linear_warmup_epochs
            else int(opt.linear_warmup_steps))
  boundaries = tuple(int(round(b * steps_per_epoch)) if opt.lr_boundaries_unit == 'epochs'
                     else int(b) for b in opt.lr_boundaries)
  patience = opt.plateau_patience
  if opt.plateau_patience_epochs:  # The evaluations that cover it, at least one.
    # round() first: epochs x steps / steps is exact only up to float error.
    patience = max(1, math.ceil(round(opt.plateau_patience_epochs * steps_per_epoch
                                      / eval_every, 9)))
  return LearningRate(
      base=float(opt.learning_rate), peak=float(peak),
      warmup='linear' if linear else 'ramp' if ramp else 'constant' if constant else 'none',
      warmup_steps=linear or ramp or constant, warmup_rate=float(opt.warmup_learning_rate),
      decay=opt.schedule, boundaries=boundaries, decay_factor=float(opt.lr_decay_factor),
      end_rate=float(opt.end_learning_rate), decay_power=float(opt.decay_power),
      total_steps=total_steps, plateau_patience=int(patience),
      plateau_threshold=float(opt.plateau_threshold))


def _decay(rate: LearningRate) -> optax.Schedule:
  """The rate after the warm-up: the peak, decayed as ``rate.decay`` says (the cosine and
  polynomial decays begin where the warm-up ends)."""
  begin = rate.warmup_steps
  if rate.decay == 'steps':
    return optax.piecewise_constant_schedule(
        rate.peak, {b: rate.decay_factor for b in rate.boundaries})
  if rate.decay == 'plateau':  # The peak, multiplied at run time.
    return optax.constant_schedule(rate.peak)
  length = rate.total_steps - begin
  if rate.decay == 'polynomial':
    return optax.polynomial_schedule(rate.peak, rate.end_rate, rate.decay_power, length,
                                     transition_begin=begin)
  cosine = optax.cosine_decay_schedule(rate.peak, length, alpha=rate.end_rate / rate.peak)
  return lambda step: cosine(step - begin)


def schedule(rate: LearningRate) -> optax.Schedule:
  """The rate at each step: a pure function of the step, so a resumed run follows it exactly.

  The ramp goes linearly from the base rate ('ramp') or from 0 ('linear') at step 0 to the peak
  at the end of the warm-up; the constant warm-up holds ``warmup_rate``. After it the decay
  continues; step boundaries are absolute steps, as if the warm-up had not been there.
  """
  decay = _decay(rate)
  if rate.warmup == 'none':
    return decay
  start = 0.0 if rate.warmup == 'linear' else rate.base

  def rate_at(step):
    # start + (peak - start) x step / steps: exactly the start at step 0.
    warmup = (start + (rate.peak - start) * step / rate.warmup_steps
              if rate.warmup in ('ramp', 'linear') else rate.warmup_rate)
    return jnp.where(step < rate.warmup_steps, warmup, decay(step))

  return rate_at


def plateau(rate: LearningRate) -> optax.GradientTransformationExtraArgs:
  """optax's reduce-on-plateau of the recipe: its state holds the factor on the rate."""
  return optax.contrib.reduce_on_plateau(factor=rate.decay_factor, patience=rate.plateau_patience,
                                         rtol=0.0, atol=rate.plateau_threshold)
