"""Scanned and unrolled nets (models.layouts): the same function, forward and gradients, and
weights that move between the two layouts: converted in memory, restored from a checkpoint,
loaded by init_from."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import resnet_jax
from resnet_jax import checkpointing, init_from, models
from resnet_jax.parallel import cpu_workarounds
from resnet_jax.steps import TrainState, start_train_state

# Small nets of each kind of block a scan runs: the paper's basic block, a pre-activation
# bottleneck, a grouped one strided on its 3x3; some stage of three or more blocks in each.
SMALL_NETS = {
    'resnet20': dict(stage_sizes=(3, 3, 3), widths=(4, 8, 8)),
    'preact_resnet164': dict(stage_sizes=(3, 2, 3), widths=(4, 4, 8)),
    'resnext50_32x4d': dict(stage_sizes=(1, 3, 1, 1), widths=(8, 8, 16, 16), groups=4,
                            base_width=32),
}


def small(name, scan_blocks):
  return models.create_model(name, 10, scan_blocks=scan_blocks, **SMALL_NETS[name])


def inputs(name):
  size = 8 if models.model_family(name) == 'cifar' else 32
  return jax.random.normal(jax.random.key(1), (4, size, size, 3))


def train_loss(model, variables, x):
  def loss(params):
    logits, updates = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                  x, train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(4)).mean(), (
        logits, updates['batch_stats'])
  return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables['params'])


def assert_trees_close(a, b, rtol):
  """Every leaf of ``b`` within ``rtol`` of ``a``'s, relative to the largest value of the leaf."""
  flat_a, flat_b = (flax.traverse_util.flatten_dict(t) if isinstance(t, dict) else {(): t}
                    for t in (a, b))
  assert flat_a.keys() == flat_b.keys()
  for key, value in flat_a.items():
    scale = float(np.abs(value).max()) or 1.0
    np.testing.assert_allclose(flat_b[key], value, rtol=rtol, atol=rtol * scale, err_msg=key)


@pytest.mark.parametrize('name', sorted(SMALL_NETS))
def test_a_scanned_net_is_the_unrolled_net(name):
  unrolled, scanned = small(name, False), small(name, True)
  x = inputs(name)
  variables = jax.jit(lambda: unrolled.init(jax.random.key(0), x, train=False))()
  stacked = models.to_layout(variables, scanned.stacked_stages())
  assert stacked.keys() == variables.keys() and scanned.stacked_stages()
  (loss, (logits, stats)), grads = train_loss(unrolled, variables, x)
  # As accelerators run it, and with the convolutions XLA:CPU runs fast in a loop: the same
  # sums, fused and ordered otherwise inside the scan's loop, float32 round-off apart.
  for model in (scanned, cpu_workarounds.with_loop_friendly_convs(scanned)):
    (scan_loss, (scan_logits, scan_stats)), scan_grads = train_loss(model, stacked, x)
    assert_trees_close(logits, scan_logits, rtol=1e-5)
    assert float(scan_loss) == pytest.approx(float(loss), rel=1e-6)
    assert_trees_close(stats, models.unrolled(scan_stats), rtol=1e-5)
    assert_trees_close(grads, models.unrolled(scan_grads), rtol=2e-5)


def test_layouts_convert_every_tree_of_a_net_both_ways():
  unrolled, scanned = small('resnet20', False), small('resnet20', True)
  x = inputs('resnet20')
  tx = optax.sgd(0.1, momentum=0.9)
  state = start_train_state(tx, unrolled.init(jax.random.key(0), x, train=False))
  state = state.replace(opt_state=jax.tree.map(lambda v: v + 1.0, state.opt_state))
  stacked = models.to_layout(state, scanned.stacked_stages())
  assert models.stacked_stages(stacked) == {'stage1', 'stage2', 'stage3'}
  assert models.stacked_stages(stacked.opt_state) == {'stage1', 'stage2', 'stage3'}
  # The stacked tree has the scanned net's shapes, block 2 at index 0 of stage1_blocks.
  abstract = jax.eval_shape(lambda: scanned.init(jax.random.key(0), x, train=False))
  assert jax.tree.map(jnp.shape, stacked.variables) == jax.tree.map(lambda a: a.shape, abstract)
  np.testing.assert_array_equal(stacked.params['stage1_blocks']['conv1']['kernel'][1],
                                state.params['stage1_block3']['conv1']['kernel'])
  back = models.unrolled(stacked)
  assert jax.tree.structure(back) == jax.tree.structure(state)
  jax.tree.map(np.testing.assert_array_equal, back, state)
  # Abstract trees convert as their values do.
  assert jax.tree.map(jnp.shape, models.unrolled(abstract)) == jax.tree.map(
      jnp.shape, unrolled.init(jax.random.key(0), x, train=False))


def abstract_state(state):
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)


def test_a_checkpoint_of_the_unrolled_net_restores_into_the_scanned_one(tmp_path):
  unrolled, scanned = small('preact_resnet164', False), small('preact_resnet164', True)
  x = inputs('preact_resnet164')
  tx = optax.sgd(0.1, momentum=0.9)
  state = start_train_state(tx, unrolled.init(jax.random.key(0), x, train=False))
  state = state.replace(step=jnp.int32(3), opt_state=jax.tree.map(jnp.sin, state.opt_state))
  manager = checkpointing.create_manager(str(tmp_path))
  checkpointing.save(manager, state, data_position=30, num_shards=1)
  manager.wait_until_finished()
  expected = models.to_layout(state, scanned.stacked_stages())
  target = abstract_state(expected)
  restored, progress = checkpointing.restore_latest(manager, target)
  manager.close()
  assert progress['step'] == 3 and isinstance(restored, TrainState)
  assert jax.tree.structure(restored) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, restored, expected)
  variables, step = checkpointing.restore_variables(str(tmp_path),
                                                    abstract_variables=target.variables)
  assert step == 3
  jax.tree.map(np.testing.assert_array_equal, variables, expected.variables)
  # Without a target, a checkpoint comes in its own layout.
  own, _ = checkpointing.restore_variables(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, own, state.variables)


def test_init_from_loads_an_unrolled_source_into_a_scanned_run():
  unrolled, scanned = small('resnext50_32x4d', False), small('resnext50_32x4d', True)
  x = inputs('resnext50_32x4d')
  variables = jax.device_get(unrolled.init(jax.random.key(0), x, train=False))
  source = init_from.Source('export.msgpack', 'msgpack', None, init_from._flat(variables))
  abstract = jax.eval_shape(lambda: scanned.init(jax.random.key(1), x, train=False))
  plan = init_from.match(source, abstract)
  assert len(plan.loaded) == plan.total and not plan.fresh
  fresh = scanned.init(jax.random.key(1), x, train=False)
  loaded = init_from.apply(plan, fresh, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  jax.tree.map(np.testing.assert_array_equal, loaded,
               models.to_layout(variables, scanned.stacked_stages()))


def test_an_unrolled_export_loads_into_a_scanned_net(tmp_path):
  unrolled, scanned = small('resnet20', False), small('resnet20', True)
  x = inputs('resnet20')
  variables = jax.device_get(unrolled.init(jax.random.key(0), x, train=False))
  path = tmp_path / 'export.msgpack'
  path.write_bytes(flax.serialization.msgpack_serialize(variables))
  model, loaded = resnet_jax.load_exported(str(path), scanned)
  assert model is scanned
  jax.tree.map(np.testing.assert_array_equal, loaded,
               models.to_layout(variables, scanned.stacked_stages()))
