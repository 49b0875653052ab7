"""The pure, jittable pieces of training: state, loss, metrics, one train step, one eval step.

Nothing here knows about files or input pipelines, and of devices only the mesh that a train step
splits its batch over, so the training loop, the benchmarks, the device-resident CIFAR path and
notebooks all share exactly these functions.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics
from jax.sharding import PartitionSpec as P

from resnet_jax import losses, mixing, optim
from resnet_jax.parallel import sharding


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes: a pure pytree."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  # The weights' moving average ``{'params', 'batch_stats'}`` (``resnet_jax.ema``); None, no
  # leaves, where the run averages nothing.
  ema: Any = None

  @property
  def variables(self):
    return {'params': self.params, 'batch_stats': self.batch_stats}


def init_variables(model, rng, image_shape) -> dict:
  """Fresh ``{'params', 'batch_stats'}`` of ``model`` for images of ``image_shape``."""
  return model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)


def init_train_state(model, tx, rng, image_shape, averaged: bool = False) -> TrainState:
  """Initialises params and batch_stats from ``rng`` and the optimizer state from them."""
  return start_train_state(tx, init_variables(model, rng, image_shape), averaged)


def start_train_state(tx, variables, averaged: bool = False) -> TrainState:
  """Step 0 from ``variables`` (``{'params', 'batch_stats'}``) and a fresh optimizer state;
  ``averaged``: with their moving average, which starts as a copy of them (its own buffers, so
  that a step may donate both)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                    batch_stats=variables['batch_stats'],
                    opt_state=tx.init(variables['params']),
                    ema=jax.tree.map(jnp.copy, dict(variables)) if averaged else None)


def first_nonfinite(values, steps):
  """The first step whose value is NaN or infinite, or int32 max when every value is finite."""
  never = jnp.iinfo(jnp.int32).max
  return jnp.min(jnp.where(jnp.isfinite(values), never, steps))


@flax.struct.dataclass
class FirstNonFinite(metrics.Metric):
  """The first training step whose loss or new parameters were not finite (int32 max if none)."""
  step: jax.Array

  @classmethod
  def from_model_output(cls, health, step, **_):
    return cls(step=first_nonfinite(health, step))

  def merge(self, other):
    return type(self)(step=jnp.minimum(self.step, other.step))

  def compute(self):
    return self.step


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  error_top1: metrics.Average.from_output('error_top1')
  error_top5: metrics.Average.from_output('error_top5')
  learning_rate: metrics.LastValue.from_output('learning_rate')
  first_nonfinite_step: FirstNonFinite


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  error_top1: metrics.Average.from_output('error_top1')
  error_top5: metrics.Average.from_output('error_top5')


def _check_ks(ks: Sequence[int]) -> None:
  if not ks or any(isinstance(k, bool) or int(k) != k or k < 1 for k in ks):
    raise ValueError(f'Top-k errors need whole numbers k >= 1; got {tuple(ks)}.')


def top_k_errors(logits, labels, ks: Sequence[int] = (1, 5)):
  """Per-example top-k errors, float32 [B, len(ks)], one column per ``k`` of ``ks``: 0 where
  the label is among the ``k`` highest scores, 1 where it is not, a fraction where a tie leaves
  it undecided. Every top-k figure of the project is counted with it.

  Ties count as a uniformly random order of the tied classes would, on average. With ``s``
  classes scoring strictly higher than the label and ``t`` others scoring the same, the label is
  equally likely at each position ``s, ..., s + t``, so its top-k error is the chance that the
  position is ``k`` or more: ``clip((s + t + 1 - k) / (t + 1), 0, 1)``. A tie is never counted
  as a win for the label, and a model whose scores are all equal scores exactly chance,
  ``1 - k / classes``, as a random guess would. An example with any NaN or infinite score is an
  error at every ``k``: a broken model is never right.

  numpy arrays are computed with numpy, on the host, compiling nothing (evaluation averages its
  views' probabilities there); anything else, traced arrays included, with ``jax.numpy``.
  """
  _check_ks(ks)
  xp = np if isinstance(logits, np.ndarray) else jnp
  scores = logits.astype(xp.float32)
  label_score = xp.take_along_axis(scores, xp.asarray(labels)[:, None], axis=-1)
  higher = xp.sum(scores > label_score, axis=-1)
  # The label and the classes tied with it (t + 1); at least 1, so a NaN label divides safely.
  level = xp.maximum(xp.sum(scores == label_score, axis=-1), 1)
  finite = xp.all(xp.isfinite(scores), axis=-1)
  # One k at a time: XLA would turn a division by a broadcast divisor into a multiplication by
  # its reciprocal, one rounding more, and the host and the devices would disagree.
  return xp.stack([xp.where(finite, xp.clip((higher + level - k) / level, 0, 1), 1)
                   for k in ks], axis=-1).astype(xp.float32)


def top_k_set_errors(logits, label_sets, ks: Sequence[int] = (1, 5)):
  """``top_k_errors`` where each example's label is a set of classes, bool [B, classes] (ReaL,
  Beyer et al. 2020): 0 where one of the set is among the ``k`` highest scores, 1 where none
  is, ties counted as a uniformly random order of the tied classes would on average.

  With ``s`` classes scoring strictly higher than the set's best member and ``t`` classes tied
  with it, ``m`` of them in the set, the tie fills positions ``s, ..., s + t - 1`` in a random
  order, and the chance that none of the ``m`` lands among the ``r = k - s`` of them inside the
  top k is ``C(t - m, r) / C(t, r)``, the product over ``i < r`` of ``(t - m - i) / (t - i)``
  (for one class, ``top_k_errors``'s count). An empty set, or any NaN or infinite score, is an
  error at every ``k``. numpy in, numpy out, as ``top_k_errors``.
  """
  _check_ks(ks)
  xp = np if isinstance(logits, np.ndarray) else jnp
  scores, label_sets = logits.astype(xp.float32), xp.asarray(label_sets, bool)
  best = xp.max(xp.where(label_sets, scores, -xp.inf), axis=-1, keepdims=True)
  higher = xp.sum(scores > best, axis=-1)
  tied = scores == best
  level = xp.sum(tied, axis=-1)
  members = xp.sum(tied & label_sets, axis=-1)
  scored = xp.all(xp.isfinite(scores), axis=-1) & xp.any(label_sets, axis=-1)
  columns = []
  for k in ks:
    none_in_top_k = xp.ones(scores.shape[:-1], xp.float32)
    for i in range(int(k)):
      left = xp.clip((level - members - i) / xp.maximum(level - i, 1), 0, 1)
      none_in_top_k = none_in_top_k * xp.where(i < k - higher, left, 1)
    columns.append(xp.where(scored, none_in_top_k, 1))
  return xp.stack(columns, axis=-1).astype(xp.float32)


def classification_outputs(logits, labels):
  """Per-example cross-entropy and top-1 / top-5 errors (``top_k_errors``), in float32."""
  logits = logits.astype(jnp.float32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return _outputs(loss, top_k_errors(logits, labels, (1, 5)))


def _outputs(loss, errors):
  return {'loss': loss, 'error_top1': errors[:, 0], 'error_top5': errors[:, 1]}


def label_set_outputs(logits, label_sets):
  """``classification_outputs`` for labels that are sets of classes (``top_k_set_errors``): the
  loss is the cross-entropy of the event "the class is in the set" (0 for an empty set)."""
  logits = logits.astype(jnp.float32)
  in_set = jax.nn.logsumexp(jnp.where(label_sets, logits, -jnp.inf), axis=-1)
  loss = jnp.where(label_sets.any(-1), jax.nn.logsumexp(logits, axis=-1) - in_set, 0.0)
  return _outputs(loss, top_k_set_errors(logits, label_sets, (1, 5)))


def model_images(batch, image_correction=None):
  """The float32 images the model sees, computed on the device inside the jitted steps.

  uint8 images (ImageNet's host pipeline) are scaled to [0, 1] and shifted by their example's
  offset ``batch['image_offset']`` [B, 3] (lighting noise minus the RGB mean), then minus
  ``image_correction`` [H, W, 3] where there is one: with the per-pixel mean
  (``dataset.imagenet_per_pixel_mean``), its difference from the per-channel one. That image is
  the same for every example, so the steps take it as a constant of the compiled program and the
  host ships 3 floats per example, not an image of them. Float images arrive preprocessed.
  """
  images, offset = batch['image'], batch.get('image_offset')
  if images.dtype != jnp.uint8:
    return images
  offset = offset[:, None, None, :]
  if image_correction is not None:
    offset = offset - image_correction
  return images.astype(jnp.float32) / 255.0 + offset


def soft_targets(batch, num_classes: int, label_smoothing: float, loss: losses.Loss,
                 mix: mixing.Mixing | None, image_correction, mix_key, mesh):
  """``(batch, targets)``: the global batch, its images mixed where ``mix`` is set, and its soft
  targets (None where the loss takes the labels themselves: the plain cross-entropy)."""
  if not (label_smoothing or mix or loss.name != 'cross_entropy'):
    return batch, None
  targets = losses.targets(batch['label'], num_classes, label_smoothing)
  if mix is None:
    return batch, targets
  images, targets = mixing.mix(mix_key, mix, model_images(batch, image_correction), targets,
                               mesh)
  return {**batch, 'image': images}, targets


def train_step(state: TrainState, batch, *, model, tx, learning_rate_fn: Callable,
               mesh: jax.sharding.Mesh, gradient_allreduce_dtype=jnp.float32,
               label_smoothing: float = 0.0, loss: losses.Loss = losses.Loss(),
               mix: mixing.Mixing | None = None, image_correction=None,
               rng: jax.Array | None = None,
               averaging=None) -> tuple[TrainState, TrainMetrics]:
  """One optimizer step on a global batch split along the ``data`` axis of ``mesh``.

  Each device differentiates the loss of its slice of the batch (``jax.shard_map``), and the
  gradients are averaged across the devices in ``gradient_allreduce_dtype`` (a dtype or its
  name). Left to itself, XLA sums the gradients of bfloat16 convolutions in bfloat16, which
  loses precision at every hop of a large slice; the explicit mean chooses the dtype. BatchNorm
  statistics stay those of the global batch, or of the configured groups (a model with
  ``freeze_bn_stats`` normalises with its running averages and keeps them); the optimizer then
  updates the replicated state with the averaged gradients. With ``label_smoothing``, ``mix``
  (``mixing.Mixing``: mixup or cutmix of the global batch, drawn from ``mixing.step_key(rng,
  step)``) or a ``loss`` other than the cross-entropy, the loss minimised (and logged) is
  ``loss`` against the soft targets (``losses``); the top-k errors are always counted against
  the batch's own labels. ``image_correction``: see ``model_images``. ``rng``: the run's key,
  for a model that draws random masks in training (dropout, stochastic depth): step k draws from
  ``fold_in(rng, k)`` folded with the device's index, so the masks are a function of (seed, step)
  and every device draws its own.
  ``averaging``: the run's ``ema.Averaging``, which moves ``state.ema`` after the update.
  """
  if mix is not None and rng is None:
    raise ValueError('Mixup and cutmix draw from the run\'s key: pass rng to train_step.')
  axis = sharding.DATA_AXIS
  model = model.clone(bn_axis_name=axis)

  def local_gradients(params, batch_stats, batch, targets, step_rng):
    # Per-device copies: their gradients stay local until the mean below (JAX would otherwise
    # sum the gradients of a replicated input itself, in the compute dtype).
    params, batch_stats = jax.lax.pcast((params, batch_stats), axis, to='varying')
    rngs = {} if step_rng is None else {
        'dropout': jax.random.fold_in(step_rng, jax.lax.axis_index(axis))}

    def loss_fn(params):
      logits, updates = model.apply({'params': params, 'batch_stats': batch_stats},
                                    model_images(batch, image_correction), train=True,
                                    mutable=['batch_stats'], rngs=rngs)
      outputs = classification_outputs(logits, batch['label'])
      if targets is not None:
        outputs['loss'] = loss(logits, targets)
      return outputs['loss'].mean(), (outputs, updates['batch_stats'])

    grads, (outputs, new_stats) = jax.grad(loss_fn, has_aux=True)(params)
    reduced = jax.lax.pmean(jax.tree.map(lambda g: g.astype(gradient_allreduce_dtype), grads),
                            axis)
    grads = jax.tree.map(lambda r, g: r.astype(g.dtype), reduced, grads)
    return grads, jax.lax.pmean(new_stats, axis), outputs

  step_rng = None if rng is None else jax.random.fold_in(rng, state.step)
  batch, targets = soft_targets(jax.device_put(batch, sharding.batch_sharding(mesh)),
                                model.num_classes, label_smoothing, loss, mix, image_correction,
                                None if mix is None else mixing.step_key(rng, state.step), mesh)
  grads, batch_stats, outputs = jax.shard_map(
      local_gradients, mesh=mesh, in_specs=(P(), P(), P(axis), P(axis), P()),
      out_specs=(P(), P(), P(axis)))(state.params, state.batch_stats, batch, targets, step_rng)
  if model.freeze_bn_stats:  # The running averages normalised the batch and stay as they were.
    batch_stats = state.batch_stats
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  step_metrics = TrainMetrics.single_from_model_output(
      loss=outputs['loss'], error_top1=outputs['error_top1'],
      error_top5=outputs['error_top5'],
      learning_rate=learning_rate_fn(state.step) * optim.learning_rate_scale(state.opt_state),
      # Non-finite if the loss or the updated parameters are: no checkpoint keeps a NaN.
      health=outputs['loss'].sum() + optax.tree.norm(params), step=state.step + 1)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  if averaging is not None:
    new_state = new_state.replace(
        ema=averaging.update(state.ema, new_state.variables, new_state.step))
  return new_state, step_metrics


def eval_step(variables, batch, *, model, image_correction=None) -> EvalMetrics:
  """Metrics of one evaluation batch; examples whose ``mask`` is False do not count.

  A batch of ``label_set`` (bool [B, classes]) instead of ``label`` scores each example against
  its set (``label_set_outputs``); an example with an empty set does not count (ReaL's rule).
  ``image_correction``: see ``model_images``.
  """
  logits = model.apply(variables, model_images(batch, image_correction), train=False)
  if 'label_set' in batch:
    outputs = label_set_outputs(logits, batch['label_set'])
    mask = batch['mask'] & batch['label_set'].any(-1)
  else:
    outputs, mask = classification_outputs(logits, batch['label']), batch['mask']
  return EvalMetrics.single_from_model_output(**outputs, mask=mask)
