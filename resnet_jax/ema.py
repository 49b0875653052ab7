"""Weight averaging (``config.ema``): an exponential moving average of the parameters and the
BatchNorm statistics, kept beside the trained weights and evaluated with them.

The average starts as the weights of step 0 (fresh, or those of ``init_from``). At every
``every``-th step, after the optimizer's update, it moves towards the new weights,
``average <- d * average + (1 - d) * weights`` (``optax.incremental_update``), with ``d = decay``;
with ``warmup``, TensorFlow's rule (``tf.train.ExponentialMovingAverage`` given
``num_updates``), ``d = min(decay, (1 + n) / (10 + n))``, ``n`` the averaging updates made before
this one, so that the first updates forget the random initialisation quickly. Steps in between
leave the average as it is (torchvision's ``model_ema_steps``); ``decay`` is per update, so
every ``k`` steps it is ``per_step_decay ** k``.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

# The weights that load_run, tools/evaluate.py and exports choose between: the trained ones
# ('raw', checkpoint item 'model') or their average ('ema', checkpoint item 'ema').
WEIGHTS = ('raw', 'ema')
# The summary prefix of the average's evaluations, before each eval set's own ('ema_eval_...').
PREFIX = 'ema_'


@dataclasses.dataclass(frozen=True)
class Averaging:
  """A run's ``config.ema`` with averaging on."""
  decay: float
  warmup: bool
  every: int

  def decay_at(self, updates_before):
    """The decay of the update that follows ``updates_before`` earlier ones (a traced int)."""
    decay = jnp.float32(self.decay)
    if self.warmup:
      n = jnp.asarray(updates_before, jnp.float32)
      decay = jnp.minimum(decay, (1 + n) / (10 + n))
    return decay

  def update(self, average, variables, step):
    """``average`` after ``step`` (the count of optimizer steps taken, ``variables`` their
    result): moved towards ``variables`` where ``step`` is a multiple of ``every``, else as it
    was."""
    due = step % self.every == 0
    moved = optax.incremental_update(variables, average, 1 - self.decay_at(step // self.every - 1))
    return jax.tree.map(lambda new, old: jnp.where(due, new, old), moved, average)


def from_config(config) -> Averaging | None:
  """The run's averaging, or None where it is off (``ema.decay`` 0)."""
  section = config.ema
  if not section.decay:
    return None
  return Averaging(decay=float(section.decay), warmup=bool(section.warmup),
                   every=int(section.every))


def problems(config) -> list[str]:
  """What is wrong with ``config.ema``; the ConfigDict keeps each field's type."""
  section, found = config.ema, []
  if not 0 <= section.decay < 1:
    found.append(f'ema.decay={section.decay} must be a number in [0, 1): 0 switches weight '
                 'averaging off, values close to 1 average over many updates (e.g. '
                 '--config.ema.decay=0.9999).')
  if section.every < 1:
    found.append(f'ema.every={section.every} must be a whole number of steps >= 1 (1: average '
                 'after every step).')
  return found
