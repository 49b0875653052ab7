"""The optimiser and its learning rate: the paper's SGD recipe and the large-batch ones beyond it.

``optimizer.name='sgd'`` is the paper's SGD with momentum and weight decay; ``'lars'`` is You et
al.'s layer-wise adaptive rates for large batches. The rate (``learning_rate_schedule``) is one
warm-up, then one decay: a linear ramp from the base rate to the rate scaled for the batch
(Goyal et al. 2017), or the paper's constant ResNet-110 warm-up; then ``optimizer.schedule``:
``'steps'`` divides it at fixed boundaries, ``'cosine'`` and ``'polynomial'`` decay it to
``end_learning_rate`` at the last step, and ``'plateau'`` divides it by 1/``lr_decay_factor``
when the held-out error has not improved by ``plateau_threshold`` for the patience (the paper's
ImageNet rule). The plateau state (``optax.contrib.reduce_on_plateau``'s) is the last element of
the optimizer state, so it is checkpointed with it; the training loop feeds it each
evaluation's top-1 error (``plateau_update``) and every update is scaled by its ``scale``.
"""

import flax
import jax
import jax.numpy as jnp
import optax

from resnet_jax import config_lib, models


def boundaries_in_steps(config, steps_per_epoch: int) -> list[int]:
  """The schedule's decay boundaries in steps, whether the config gives steps or epochs."""
  opt = config.optimizer
  if opt.lr_boundaries_unit == 'epochs':
    return [int(round(b * steps_per_epoch)) for b in opt.lr_boundaries]
  return [int(b) for b in opt.lr_boundaries]


def _decay_schedule(config, steps_per_epoch: int, begin: int) -> optax.Schedule:
  """The rate after the warm-up: the scaled rate, decayed as ``optimizer.schedule`` says (the
  cosine and polynomial decays start at step ``begin``, the end of the warm-up)."""
  opt = config.optimizer
  peak = config_lib.scaled_learning_rate(config)
  if opt.schedule == 'steps':
    return optax.piecewise_constant_schedule(
        peak, {b: opt.lr_decay_factor for b in boundaries_in_steps(config, steps_per_epoch)})
  if opt.schedule == 'plateau':  # The scaled rate, multiplied at run time.
    return optax.constant_schedule(peak)
  length = config_lib.total_steps(config, steps_per_epoch) - begin
  if opt.schedule == 'polynomial':
    return optax.polynomial_schedule(peak, opt.end_learning_rate, opt.decay_power, length,
                                     transition_begin=begin)
  cosine = optax.cosine_decay_schedule(peak, length, alpha=opt.end_learning_rate / peak)
  return lambda step: cosine(step - begin)


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  """The rate at each step: a pure function of the step, so a resumed run follows it exactly.

  Where the batch scales the rate above ``learning_rate`` (``lr_reference_batch``), it ramps
  linearly from ``learning_rate`` at step 0 to the scaled rate at the end of
  ``scaling_warmup_epochs`` (``config_lib.scaling_warmup_steps``). The paper's warm-up
  (``config_lib.warmup_steps``: the config's, or the network's recipe) instead holds
  ``warmup_learning_rate`` for the first steps (ResNet-110: 0.01 for 400 iterations).
  ``validate`` refuses a config where both apply. After the warm-up the decay continues; step
  boundaries are absolute steps, as if the warm-up had not been there.
  """
  opt = config.optimizer
  ramp_steps = config_lib.scaling_warmup_steps(config, steps_per_epoch)
  increase = config_lib.scaled_learning_rate(config) - opt.learning_rate
  warmup_steps = ramp_steps or config_lib.warmup_steps(config)
  decay = _decay_schedule(config, steps_per_epoch, begin=warmup_steps)
  if not warmup_steps:
    return decay

  def schedule(step):
    # The ramp is base + (scaled - base) x step / ramp_steps: exactly the base rate at step 0.
    warmup = (opt.learning_rate + increase * step / ramp_steps if ramp_steps
              else opt.warmup_learning_rate)
    return jnp.where(step < warmup_steps, warmup, decay(step))

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


def _lars_direction(weight_decay: float, trust_coefficient: float,
                    eps: float) -> optax.GradientTransformation:
  """Each tensor's decayed gradient g + wd w times its trust ratio
  coefficient x ||w|| / (||g|| + wd ||w|| + eps), 1 where either norm is 0.

  You et al.'s ratio (and the MLPerf reference's) takes the two norms apart; ``optax.lars``
  divides by ||g + wd w|| instead, a different rate wherever g is not parallel to w.
  """

  def update(updates, state, params):
    def direction(g, w):
      w_norm, g_norm = optax.tree.norm(w), optax.tree.norm(g)
      ratio = trust_coefficient * w_norm / (g_norm + weight_decay * w_norm + eps)
      ratio = jnp.where((w_norm > 0) & (g_norm > 0), ratio, 1.0)
      return (g + weight_decay * w) * ratio.astype(g.dtype)

    return jax.tree.map(direction, updates, params), state

  return optax.GradientTransformation(optax.init_empty_state, update)


def _lars(config, schedule) -> optax.GradientTransformation:
  """LARS (You et al. 2017) as the MLPerf ResNet-50 reference runs it: v = m v + lr x direction,
  w -= v, where the kernels' direction is ``_lars_direction`` and the other parameters' (BatchNorm
  scale and bias, dense bias) their plain gradient, without weight decay."""
  opt = config.optimizer
  return optax.chain(
      optax.masked(_lars_direction(opt.weight_decay, opt.lars_trust_coefficient,
                                   opt.lars_epsilon), weight_decay_mask('kernels')),
      optax.scale_by_learning_rate(schedule),
      optax.trace(decay=opt.momentum, nesterov=opt.nesterov))


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
  """The config's optimizer and its learning-rate schedule: ``(optimizer, schedule)``.

  SGD: (optionally Nesterov) momentum and L2 weight decay added to the gradient before momentum,
  exactly like Caffe's and PyTorch's SGD. LARS: ``_lars``. With the plateau schedule the updates
  are then scaled, which scales the rate, as Caffe and PyTorch do. With
  ``backbone_lr_multiplier`` (fine-tuning) the updates outside the classifier are scaled by it.
  """
  opt = config.optimizer
  schedule = learning_rate_schedule(config, steps_per_epoch)
  if opt.name == 'lars':
    tx = _lars(config, schedule)
  else:
    tx = optax.chain(
        optax.add_decayed_weights(opt.weight_decay, weight_decay_mask(opt.weight_decay_on)),
        optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov))
  if opt.schedule == 'plateau':
    tx = optax.chain(tx, _scale_by_plateau(_plateau(config, steps_per_epoch)))
  if opt.backbone_lr_multiplier != 1:
    tx = _scale_backbone(tx, opt.backbone_lr_multiplier)
  return tx, schedule


def _scale_backbone(tx, multiplier: float) -> optax.GradientTransformation:
  """``tx`` with every update outside the classifier multiplied by ``multiplier``: the backbone
  learns at ``multiplier`` times the classifier's rate, and 0 freezes it (weight decay and
  momentum included). The state is ``tx``'s own, so a run resumes with another multiplier."""

  def scale(path, update):
    if path[0] == models.CLASSIFIER:
      return update
    return update * jnp.asarray(multiplier, update.dtype)

  def update(updates, state, params=None, **extra_args):
    updates, state = tx.update(updates, state, params, **extra_args)
    return flax.traverse_util.path_aware_map(scale, updates), state

  return optax.GradientTransformation(tx.init, update)


def learning_rate_scale(opt_state):
  """The plateau schedule's factor on the rate (1.0 without one)."""
  last = opt_state[-1] if isinstance(opt_state, tuple) and opt_state else None
  return last.scale if isinstance(last, optax.contrib.ReduceLROnPlateauState) else 1.0


def plateau_update(config, steps_per_epoch: int, opt_state, error):
  """``opt_state`` after one evaluation's held-out ``error`` (jittable; plateau schedule only)."""
  _, plateau_state = _plateau(config, steps_per_epoch).update({}, opt_state[-1], value=error)
  return (*opt_state[:-1], plateau_state)


def smoothed_cross_entropy(logits, labels, label_smoothing: float):
  """Per-example cross-entropy against targets smoothed towards uniform (Szegedy et al. 2016):
  1 - a + a/K on the label and a/K on each other of the K classes, a = ``label_smoothing``."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
