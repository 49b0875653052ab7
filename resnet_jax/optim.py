"""The optimizer: the paper's SGD, LARS for large batches, AdamW and LAMB.

``optimizer.name='sgd'`` is the paper's SGD with momentum and weight decay; ``'lars'`` is You et
al.'s layer-wise adaptive rates for large batches; ``'adamw'`` is Adam with decoupled weight
decay (Loshchilov and Hutter 2019) and ``'lamb'`` its layer-wise adaptive form (You et al. 2020,
the optimizer of timm's "ResNet strikes back" recipes), both optax's. All take their rate from
the run's ``learning_rate.LearningRate``, and clip the gradient's global norm first where
``grad_clip_norm`` is set. With the plateau schedule the last element of the optimizer
state is ``optax.contrib.reduce_on_plateau``'s, so it is checkpointed with it; the training loop
feeds it each evaluation's top-1 error (``plateau_update``) and every update is scaled by its
``scale``.
"""

import flax
import jax
import jax.numpy as jnp
import optax

from resnet_jax import learning_rate, models

OPTIMIZERS = ('sgd', 'lars', 'adamw', 'lamb')


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
  if not (0 <= opt.adam_b1 < 1 and 0 <= opt.adam_b2 < 1):
    found.append(f'optimizer.adam_b1={opt.adam_b1} and optimizer.adam_b2={opt.adam_b2} (AdamW, '
                 'LAMB) must be in [0, 1), e.g. 0.9 and 0.999.')
  if opt.adam_eps is not None and not opt.adam_eps > 0:
    found.append(f'optimizer.adam_eps={opt.adam_eps} must be positive, or None for the '
                 "optimizer's own (AdamW 1e-8, LAMB 1e-6).")
  if opt.grad_clip_norm is not None and not opt.grad_clip_norm > 0:
    found.append(f'optimizer.grad_clip_norm={opt.grad_clip_norm} must be positive, or None not '
                 'to clip the gradient.')
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


def _adaptive(opt, schedule) -> optax.GradientTransformation:
  """optax's AdamW or LAMB: weight decay decoupled from the gradient's moments, on the
  parameters of ``weight_decay_on``; LAMB's trust ratio ||w|| / ||update|| scales every
  parameter's update (timm's ``Lamb`` leaves the undecayed ones unscaled)."""
  adaptive = optax.adamw if opt.name == 'adamw' else optax.lamb
  eps = {} if opt.adam_eps is None else {'eps': opt.adam_eps}
  return adaptive(schedule, b1=opt.adam_b1, b2=opt.adam_b2, weight_decay=opt.weight_decay,
                  mask=weight_decay_mask(opt.weight_decay_on), **eps)


def create_optimizer(opt, rate: learning_rate.LearningRate):
  """The optimizer of ``opt`` (a config's ``optimizer``) at the rate ``rate``, and its schedule:
  ``(optimizer, schedule)``.

  SGD: (optionally Nesterov) momentum and L2 weight decay added to the gradient before momentum,
  exactly like Caffe's and PyTorch's SGD. LARS: ``_lars``. AdamW, LAMB: ``_adaptive``. With
  ``grad_clip_norm`` the gradient is first scaled to at most that global norm. With the plateau
  schedule the updates are then scaled, which scales the rate, as Caffe and PyTorch do. With
  ``backbone_lr_multiplier`` (fine-tuning) the updates outside the classifier are scaled by it.
  """
  schedule = learning_rate.schedule(rate)
  if opt.name == 'lars':
    tx = _lars(opt, schedule)
  elif opt.name in ('adamw', 'lamb'):
    tx = _adaptive(opt, schedule)
  else:
    tx = optax.chain(
        optax.add_decayed_weights(opt.weight_decay, weight_decay_mask(opt.weight_decay_on)),
        optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov))
  if opt.grad_clip_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
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
