"""The paper's optimiser: SGD with momentum, weight decay and a step-decay learning rate.

``optimizer.schedule='steps'`` divides the rate at fixed boundaries; ``'plateau'`` divides it
by 1/``lr_decay_factor`` when the held-out error has not improved by ``plateau_threshold`` for
the patience (``config_lib.intervals``; the paper's ImageNet rule). The plateau state
(``optax.contrib.reduce_on_plateau``'s) is the last element of the optimizer state, so it is
checkpointed with it; the training loop feeds it each evaluation's top-1 error
(``plateau_update``) and the train step scales every update by its ``scale``.
"""

import flax
import jax
import jax.numpy as jnp
import optax

from resnet_jax import config_lib


def base_learning_rate(config) -> float:
  """The configured rate, scaled linearly with the batch when ``lr_reference_batch`` is set."""
  opt = config.optimizer
  if opt.lr_reference_batch:
    return opt.learning_rate * config.batch_size / opt.lr_reference_batch
  return opt.learning_rate


def boundaries_in_steps(config, steps_per_epoch: int) -> list[int]:
  """The schedule's decay boundaries in steps, whether the config gives steps or epochs."""
  opt = config.optimizer
  if opt.lr_boundaries_unit == 'epochs':
    return [int(round(b * steps_per_epoch)) for b in opt.lr_boundaries]
  return [int(b) for b in opt.lr_boundaries]


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  """Piecewise constant: ``base`` divided by 1/``lr_decay_factor`` at each boundary.

  With a warm-up (``config_lib.warmup_steps``: the config's, or the network's recipe) the rate
  is held at ``warmup_learning_rate`` for the first steps (the paper's ResNet-110 recipe: 0.01
  for 400 iterations), then the step-decay schedule continues as if the warmup had not been
  there (its boundaries are absolute steps).
  """
  opt = config.optimizer
  decay = ({b: opt.lr_decay_factor for b in boundaries_in_steps(config, steps_per_epoch)}
           if opt.schedule == 'steps' else {})  # 'plateau': the base rate, scaled at run time.
  step_decay = optax.piecewise_constant_schedule(base_learning_rate(config), decay)
  warmup_steps = config_lib.warmup_steps(config)
  if not warmup_steps:
    return step_decay

  def schedule(step):
    return jnp.where(step < warmup_steps, opt.warmup_learning_rate, step_decay(step))

  return schedule


def weight_decay_mask(decay_on: str):
  """Which parameters weight decay applies to: None (all) or a function of the params.

  'all': every parameter, as in the paper's Caffe solver and torchvision's reference recipe.
  'kernels': conv and dense kernels only (no BatchNorm scale/bias, no dense bias).
  """
  if decay_on == 'all':
    return None
  if decay_on == 'kernels':
    return lambda params: flax.traverse_util.path_aware_map(
        lambda path, _: path[-1] == 'kernel', params)
  raise ValueError(f"optimizer.weight_decay_on={decay_on!r}; use 'all' or 'kernels'.")


def _plateau(config, steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
  opt = config.optimizer
  patience = config_lib.intervals(config, steps_per_epoch).plateau_patience
  return optax.contrib.reduce_on_plateau(factor=opt.lr_decay_factor, patience=patience,
                                         rtol=0.0, atol=opt.plateau_threshold)


def _scale_by_plateau(plateau) -> optax.GradientTransformation:
  """Multiplies updates by the plateau state's ``scale``; only ``plateau_update`` changes it."""

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state

  return optax.GradientTransformation(plateau.init, update)


def create_optimizer(config, steps_per_epoch: int):
  """SGD with (optionally Nesterov) momentum and L2 weight decay added to the gradient.

  The decay is added to the gradient before momentum, exactly like Caffe's and PyTorch's SGD.
  With the plateau schedule the updates are then scaled, which scales the rate, as Caffe and
  PyTorch do. Returns ``(optimizer, learning_rate_schedule)``.
  """
  opt = config.optimizer
  schedule = learning_rate_schedule(config, steps_per_epoch)
  tx = optax.chain(
      optax.add_decayed_weights(opt.weight_decay, weight_decay_mask(opt.weight_decay_on)),
      optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov),
  )
  if opt.schedule == 'plateau':
    tx = optax.chain(tx, _scale_by_plateau(_plateau(config, steps_per_epoch)))
  return tx, schedule


def learning_rate_scale(opt_state):
  """The plateau schedule's factor on the rate (1.0 without one)."""
  last = opt_state[-1] if isinstance(opt_state, tuple) and opt_state else None
  return last.scale if isinstance(last, optax.contrib.ReduceLROnPlateauState) else 1.0


def plateau_update(config, steps_per_epoch: int, opt_state, error):
  """``opt_state`` after one evaluation's held-out ``error`` (jittable; plateau schedule only)."""
  _, plateau_state = _plateau(config, steps_per_epoch).update({}, opt_state[-1], value=error)
  return (*opt_state[:-1], plateau_state)
