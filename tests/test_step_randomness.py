"""The random masks of a train step (dropout, stochastic depth) are a function of the run's key and
the step: the same state and key give the same step, another step other masks; and each device
draws its own (two devices given the same examples do not drop the same branches)."""

import textwrap

import jax
import numpy as np
import optax
import pytest

from resnet_jax import models, steps
from resnet_jax.parallel import sharding
from tests.harness import script_json


def test_the_masks_are_a_function_of_the_key_and_the_step():
  model = models.create_model('resnet20', 10, stage_sizes=(2, 2), widths=(4, 8),
                              drop_path_rate=0.5)
  tx = optax.sgd(0.1)
  state = steps.init_train_state(model, tx, jax.random.key(0), (8, 8, 3))
  batch = {'image': jax.random.normal(jax.random.key(1), (16, 8, 8, 3)),
           'label': np.arange(16) % 10}
  step = jax.jit(lambda state, rng: steps.train_step(
      state, batch, model=model, tx=tx, learning_rate_fn=lambda s: 0.1,
      mesh=sharding.create_mesh(), rng=rng)[0].params)
  same = step(state, jax.random.key(7))
  jax.tree.map(np.testing.assert_array_equal, step(state, jax.random.key(7)), same)
  later = state.replace(step=state.step + 5)
  for other in (step(state, jax.random.key(8)), step(later, jax.random.key(7))):
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, other, same)))


# One step on 1 device of a batch A, and on 2 devices of the batch A + A, learning rate 0: with
# the BatchNorm statistics of A + A those of A, the two runs' losses differ only by the masks.
TWO_DEVICES = textwrap.dedent('''
    import functools, json, sys
    import jax, numpy as np, optax
    from resnet_jax import models, steps
    from resnet_jax.parallel import sharding

    losses = {}
    for rate in (0.0, 0.5):
      model = models.create_model('resnet20', 10, stage_sizes=(2, 2), widths=(4, 8),
                                  drop_path_rate=rate)
      tx = optax.sgd(0.0)
      state = steps.init_train_state(model, tx, jax.random.key(0), (8, 8, 3))
      half = {'image': np.random.default_rng(0).standard_normal((32, 8, 8, 3), np.float32),
              'label': np.arange(32, dtype=np.int32) % 10}
      for devices in (1, 2):
        mesh = sharding.create_mesh(jax.devices()[:devices])
        batch = {k: np.concatenate([v] * devices) for k, v in half.items()}
        step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx,
                                         learning_rate_fn=lambda s: 0.0, mesh=mesh,
                                         rng=jax.random.key(3)))
        _, metrics = step(state, sharding.to_global(batch, sharding.batch_sharding(mesh)))
        losses[f'{rate}/{devices}'] = float(metrics.compute()['loss'])
    print(json.dumps(losses))
''')


@pytest.mark.e2e
def test_every_device_draws_its_own_masks():
  losses = script_json(TWO_DEVICES, devices=2)
  assert losses['0.0/2'] == pytest.approx(losses['0.0/1'], rel=1e-5)  # No masks: the same.
  # The first device draws as the one device did; the second, with its own key, otherwise.
  assert abs(losses['0.5/2'] - losses['0.5/1']) > 1e-3 * losses['0.5/1']
