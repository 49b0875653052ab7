"""The optimizer: the paper's SGD, and LARS for large batches.

``optimizer.name='sgd'`` is the paper's SGD with momentum and weight decay; ``'lars'`` is You et
al.'s layer-wise adaptive rates for large batches. Both take their rate from the run's
``learning_rate.LearningRate``. With the plateau schedule the last element of the optimizer
state is ``optax.contrib.reduce_on_plateau``'s, so it is checkpointed with it; the training loop
feeds it each evaluation's top-1 error (``plateau_update``) and every update is scaled by its
``scale``.
"""

import flax
import jax
import jax.numpy as jnp
import optax

from resnet_jax import learning_rate, models

OPTIMIZERS = ('sgd', 'lars')


def problems(config) -> list[str]:
  """What keeps ``config.optimizer`` (with the rest of the recipe it trains) from building."""
  opt = config.optimizer
  found = learning_rate.problems(config)
  if opt.name not in OPTIMIZERS:
    found.append(f'optimizer.name={opt.name!r} is not an optimizer; use one of '
                 f'{", ".join(map(repr, OPTIMIZERS))}.')
  elif opt.name == 'lars' and opt.weight_decay_on != 'kernels':
    found.append('optimizer.name=lars adapts and decays the conv and dense kernels only '
                 '(BatchNorm parameters and biases take plain momentum SGD, as You et al. and '
                 'the MLPerf reference do), but optimizer.weight_decay_on='
                 f"{opt.weight_decay_on!r}: set --config.optimizer.weight_decay_on=kernels.")
  if not opt.lars_trust_coefficient > 0 or opt.lars_epsilon < 0:
    found.append(f'optimizer.lars_trust_coefficient={opt.lars_trust_coefficient} must be '
                 f'positive and optimizer.lars_epsilon={opt.lars_epsilon} not negative.')
  if not 0 <= config.label_smoothing < 1:
    found.append(f'label_smoothing={config.label_smoothing} must be in [0, 1) (0: the plain '
                 'cross-entropy; MLPerf uses 0.1).')
  if not 0 <= opt.momentum < 1:
    found.append(f'optimizer.momentum={opt.momentum} must be in [0, 1).')
  if opt.weight_decay < 0:
    found.append(f'optimizer.weight_decay={opt.weight_decay} must not be negative.')
  if opt.weight_decay_on not in ('all', 'kernels'):
    found.append(f"optimizer.weight_decay_on={opt.weight_decay_on!r}; use 'all' or 'kernels'.")
  if opt.backbone_lr_multiplier < 0:
    found.append(f'optimizer.backbone_lr_multiplier={opt.backbone_lr_multiplier} must not be '
                 'negative (1: one rate for every variable, 0: a frozen backbone).')
  return found


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


def _lars(opt, schedule) -> optax.GradientTransformation:
  """LARS (You et al. 2017) as the MLPerf ResNet-50 reference runs it: v = m v + lr x direction,
  w -= v, where the kernels' direction is ``_lars_direction`` and the other parameters' (BatchNorm
  scale and bias, dense bias) their plain gradient, without weight decay."""
  return optax.chain(
      optax.masked(_lars_direction(opt.weight_decay, opt.lars_trust_coefficient,
                                   opt.lars_epsilon), weight_decay_mask('kernels')),
      optax.scale_by_learning_rate(schedule),
      optax.trace(decay=opt.momentum, nesterov=opt.nesterov))


def _scale_by_plateau(plateau) -> optax.GradientTransformation:
  """Multiplies updates by the plateau state's ``scale``; only ``plateau_update`` changes it."""

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state

  return optax.GradientTransformation(plateau.init, update)


def create_optimizer(opt, rate: learning_rate.LearningRate):
  """The optimizer of ``opt`` (a config's ``optimizer``) at the rate ``rate``, and its schedule:
  ``(optimizer, schedule)``.

  SGD: (optionally Nesterov) momentum and L2 weight decay added to the gradient before momentum,
  exactly like Caffe's and PyTorch's SGD. LARS: ``_lars``. With the plateau schedule the updates
  are then scaled, which scales the rate, as Caffe and PyTorch do. With
  ``backbone_lr_multiplier`` (fine-tuning) the updates outside the classifier are scaled by it.
  """
  schedule = learning_rate.schedule(rate)
  if opt.name == 'lars':
    tx = _lars(opt, schedule)
  else:
    tx = optax.chain(
        optax.add_decayed_weights(opt.weight_decay, weight_decay_mask(opt.weight_decay_on)),
        optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov))
  if rate.decay == 'plateau':
    tx = optax.chain(tx, _scale_by_plateau(learning_rate.plateau(rate)))
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


def plateau_update(rate: learning_rate.LearningRate, opt_state, error):
  """``opt_state`` after one evaluation's held-out ``error`` (jittable; plateau schedule only)."""
  _, plateau_state = learning_rate.plateau(rate).update({}, opt_state[-1], value=error)
  return (*opt_state[:-1], plateau_state)


def smoothed_cross_entropy(logits, labels, label_smoothing: float):
  """Per-example cross-entropy against targets smoothed towards uniform (Szegedy et al. 2016):
  1 - a + a/K on the label and a/K on each other of the K classes, a = ``label_smoothing``."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
