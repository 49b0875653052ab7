"""Loss and metrics of the train and eval steps against hand computations, and the data-parallel
train step against jit's own partitioning of the same step on 1 and 8 devices."""

import functools
import itertools
import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from resnet_jax import models, steps
from resnet_jax.parallel import sharding
from tests.harness import tiny_step_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_top1_and_top5_errors_by_rank():
  logits = jnp.array([[9., 1, 2, 3, 4, 5, 6, 0],   # label 0 is the top class.
                      [9., 8, 7, 6, 5, 4, 3, 2],   # label 4 has rank 4: top-1 wrong, top-5 right.
                      [9., 8, 7, 6, 5, 4, 3, 2]])  # label 5 has rank 5: both wrong.
  labels = jnp.array([0, 4, 5])
  out = steps.classification_outputs(logits, labels)
  np.testing.assert_array_equal(out['error_top1'], [0, 1, 1])
  np.testing.assert_array_equal(out['error_top5'], [0, 0, 1])
  expected_loss = -jax.nn.log_softmax(logits)[jnp.arange(3), labels]
  np.testing.assert_allclose(out['loss'], expected_loss, rtol=1e-5)


# The rule the top-k errors are held to: the classes are ranked by score, tied classes in a
# uniformly random order, and an example's top-k error is the chance that its label is not among
# the first k; any NaN or infinite score makes it an error at every k. A model whose scores are
# all equal is then exactly as wrong as a random guess, 1 - k / classes, never better.


def error_over_tie_orders(scores, label, k):
  """The rule written out: every order of the classes that sorts their scores (ties in every
  order) is equally likely; the fraction of them that rank ``label`` k-th or later."""
  scores = [float(v) for v in scores]
  if not all(np.isfinite(scores)):
    return 1.0
  orders = [order for order in itertools.permutations(range(len(scores)))
            if all(scores[a] >= scores[b] for a, b in itertools.pairwise(order))]
  return sum(order.index(label) >= k for order in orders) / len(orders)


def error_by_counting(scores, label, k):
  """The same chance from counts, by plain loops: s classes higher, t others tied, the label
  equally likely at positions s, ..., s + t."""
  scores = [float(v) for v in scores]
  if not all(np.isfinite(scores)):
    return 1.0
  higher = sum(v > scores[label] for v in scores)
  tied = sum(v == scores[label] for i, v in enumerate(scores) if i != label)
  positions = range(higher, higher + tied + 1)
  return sum(p >= k for p in positions) / len(positions)


@pytest.mark.parametrize('classes', [2, 3, 10, 1000])
def test_all_equal_logits_score_exactly_chance(classes):
  logits = jnp.full((4, classes), 0.25)
  labels = jnp.array([0, 1, classes - 1, classes // 2])
  ks = (1, 2, 5, classes)
  errors = np.asarray(jax.jit(steps.top_k_errors, static_argnums=2)(logits, labels, ks))
  chance = [np.float32(Fraction(max(classes - k, 0), classes)) for k in ks]
  np.testing.assert_array_equal(errors, [chance] * 4)
  outputs = steps.classification_outputs(logits, labels)
  np.testing.assert_array_equal(outputs['error_top1'], np.float32(1 - 1 / classes))
  np.testing.assert_allclose(outputs['loss'], np.log(classes), rtol=1e-6)


def test_nonfinite_logits_are_errors_at_every_k():
  logits = np.tile(np.arange(10, 0, -1, dtype=np.float32), (5, 1))  # Class 0 on top.
  logits[0, :] = np.nan            # A broken model: every score NaN.
  logits[1, 0] = np.nan            # The label's score NaN.
  logits[2, 9] = np.nan            # Another class's score NaN.
  logits[3, 0] = np.inf            # The label's score infinite.
  logits[4, 5] = -np.inf           # Another class's score minus infinite.
  labels = np.zeros(5, np.int32)
  for compute in (steps.top_k_errors, jax.jit(steps.top_k_errors, static_argnums=2)):
    errors = np.asarray(compute(logits, labels, (1, 5, 10)))
    np.testing.assert_array_equal(errors, np.ones((5, 3)))
  outputs = steps.classification_outputs(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_array_equal(outputs['error_top5'], np.ones(5))


def test_ties_count_as_the_average_over_random_tie_orders():
  rng = np.random.default_rng(0)
  logits = rng.integers(0, 3, (300, 6)).astype(np.float32)  # Classes of equal score, often.
  labels = rng.integers(0, 6, 300)
  ks = (1, 2, 5, 6)
  expected = [[error_over_tie_orders(row, label, k) for k in ks]
              for row, label in zip(logits, labels)]
  assert 0 < np.mean([0 < e < 1 for row in expected for e in row])  # Ties decide something.
  on_host = steps.top_k_errors(logits, labels, ks)
  on_device = np.asarray(jax.jit(steps.top_k_errors, static_argnums=2)(
      jnp.asarray(logits), jnp.asarray(labels), ks))
  np.testing.assert_allclose(on_host, expected, rtol=1e-6)
  # The host (evaluation) and the devices (training) agree bit for bit.
  np.testing.assert_array_equal(on_host, on_device)
  assert on_host.dtype == on_device.dtype == np.float32


def test_without_ties_the_errors_are_torch_topk_membership():
  rng = np.random.default_rng(1)
  logits = rng.standard_normal((64, 1000)).astype(np.float32)
  labels = rng.integers(0, 1000, 64)
  labels[:8] = logits[:8].argmax(1)  # Some right at top-1, some only within the top 5.
  labels[8:16] = np.argsort(-logits[8:16], 1)[:, 3]
  outputs = steps.classification_outputs(jnp.asarray(logits), jnp.asarray(labels))
  for k, name in ((1, 'error_top1'), (5, 'error_top5')):
    top = torch.topk(torch.from_numpy(logits), k, dim=1).indices.numpy()
    expected = [float(label not in row) for row, label in zip(top, labels)]
    np.testing.assert_array_equal(outputs[name], expected)
  assert outputs['error_top1'][:16].sum() == 8 and outputs['error_top5'][:16].sum() == 0


def test_bfloat16_logits_ties_are_counted_not_won():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.standard_normal((64, 1000)) * 4, jnp.bfloat16)
  values = np.asarray(logits.astype(jnp.float32))
  labels = np.array([int(np.argsort(-row)[1]) for row in values])  # The second highest score.
  outputs = steps.classification_outputs(logits, jnp.asarray(labels))
  for k, name in ((1, 'error_top1'), (5, 'error_top5')):
    expected = [error_by_counting(row, label, k) for row, label in zip(values, labels)]
    np.testing.assert_allclose(outputs[name], expected, rtol=1e-6)
  # bfloat16's 8 bits tie the label with the top score in some rows: neither 0 nor 1 there.
  tied_with_top = np.array([row[label] == row.max() for row, label in zip(values, labels)])
  assert tied_with_top.any() and not tied_with_top.all()
  np.testing.assert_array_less(0.0, np.asarray(outputs['error_top1'])[tied_with_top])


def test_error_metrics_average_the_examples_that_count():
  rng = np.random.default_rng(3)
  logits = rng.integers(0, 2, (40, 4)).astype(np.float32)
  labels = rng.integers(0, 4, 40)
  mask = rng.random(40) < 0.6
  outputs = steps.classification_outputs(jnp.asarray(logits), jnp.asarray(labels))
  metrics = steps.EvalMetrics.single_from_model_output(**outputs, mask=jnp.asarray(mask))
  values = metrics.compute()
  for k, name in ((1, 'error_top1'), (5, 'error_top5')):
    counted = [error_by_counting(row, label, k)
               for row, label, real in zip(logits, labels, mask) if real]
    assert values[name].dtype == jnp.float32
    np.testing.assert_allclose(values[name], sum(counted) / len(counted), rtol=1e-6)


@pytest.mark.parametrize('ks', [(), (0,), (1, -5), (1.5,), (True,)])
def test_top_k_errors_refuse_a_k_that_is_not_a_positive_whole_number(ks):
  with pytest.raises(ValueError, match='whole numbers k >= 1'):
    steps.top_k_errors(np.zeros((2, 10)), np.zeros(2, np.int32), ks)


def test_eval_step_ignores_masked_examples():
  model = models.create_model('resnet20', 10, stage_sizes=(1, 1, 1))
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  variables = model.init(jax.random.key(1), x, train=False)
  labels = jnp.array([1, 2, 3, 4])
  masked = steps.eval_step(variables, {'image': x, 'label': labels,
                                       'mask': jnp.array([True, True, False, False])},
                           model=model).compute()
  first_two = steps.eval_step(variables, {'image': x[:2], 'label': labels[:2],
                                          'mask': jnp.ones(2, bool)}, model=model).compute()
  for key in ('loss', 'error_top1', 'error_top5'):
    np.testing.assert_allclose(masked[key], first_two[key], rtol=1e-6)


def test_train_step_is_one_sgd_step_on_the_mean_loss():
  model, tx, state, batch = tiny_step_inputs(channels=3)
  x = batch['image']
  new_state, metrics = jax.jit(functools.partial(
      steps.train_step, model=model, tx=tx, learning_rate_fn=lambda s: 0.1,
      mesh=sharding.create_mesh()))(state, batch)

  def loss(params):
    logits, _ = model.apply({'params': params, 'batch_stats': state.batch_stats}, x,
                            train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()

  value, grads = jax.value_and_grad(loss)(state.params)
  expected = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               new_state.params, expected)
  values = metrics.compute()
  np.testing.assert_allclose(values['loss'], value, rtol=1e-5)
  assert int(new_state.step) == 1
  np.testing.assert_allclose(values['learning_rate'], 0.1, rtol=1e-7)
  assert int(values['first_nonfinite_step']) == np.iinfo(np.int32).max


def test_first_nonfinite_step_survives_merging():
  metric = steps.FirstNonFinite.from_model_output(jnp.array([1.0, 2.0]), jnp.array(3))
  metric = metric.merge(steps.FirstNonFinite.from_model_output(jnp.array([jnp.nan, 1.0]),
                                                               jnp.array(4)))
  metric = metric.merge(steps.FirstNonFinite.from_model_output(jnp.array([jnp.inf]),
                                                               jnp.array(5)))
  assert int(metric.compute()) == 4


def test_gradients_are_averaged_in_the_chosen_dtype():
  """float32 by default; bfloat16 on request, when the optimizer receives bfloat16 numbers."""
  model = models.create_model('resnet20', 10, stage_sizes=(1, 1, 1))
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  batch = {'image': x, 'label': jnp.array([0, 1, 2, 3])}
  # An "optimizer" that keeps the gradients it receives as its state.
  keep = optax.GradientTransformation(
      lambda params: params, lambda grads, state, params=None: (
          jax.tree.map(jnp.zeros_like, grads), grads))
  state = steps.init_train_state(model, keep, jax.random.key(1), (8, 8, 3))

  def loss(params):
    logits, _ = model.apply({'params': params, 'batch_stats': state.batch_stats}, x,
                            train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()

  expected = jax.grad(loss)(state.params)
  as_bf16 = lambda g: np.asarray(jnp.asarray(g).astype(jnp.bfloat16).astype(jnp.float32))
  for dtype in (jnp.float32, jnp.bfloat16):
    new_state, _ = jax.jit(functools.partial(
        steps.train_step, model=model, tx=keep, learning_rate_fn=lambda s: 0.1,
        mesh=sharding.create_mesh(), gradient_allreduce_dtype=dtype))(state, batch)
    received = jax.tree.leaves(new_state.opt_state)
    representable = all(np.array_equal(as_bf16(g), g) for g in received)
    assert representable == (dtype == jnp.bfloat16)
    rtol = 1e-5 if dtype == jnp.float32 else 1e-2
    for g, e in zip(received, jax.tree.leaves(expected)):
      np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * np.abs(e).max())


DATA_PARALLEL_STEPS = textwrap.dedent('''
    import functools, sys
    import flax, jax, numpy as np, optax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from resnet_jax import models, steps
    from resnet_jax.parallel import sharding

    def plain_jit_step(model, tx):
      """The step as jit alone partitions it: the global batch split along 'data', XLA adding
      the collectives (global BatchNorm statistics, gradient sums) itself."""
      def step(state, batch):
        def loss_fn(params):
          logits, updates = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                        batch['image'], train=True, mutable=['batch_stats'])
          loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
          return loss.mean(), updates['batch_stats']
        grads, batch_stats = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(step=state.step + 1, batch_stats=batch_stats, opt_state=opt_state,
                             params=optax.apply_updates(state.params, updates))
      mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ('data',))
      return jax.jit(step, in_shardings=(NamedSharding(mesh, P()),
                                         NamedSharding(mesh, P('data'))))

    rng = np.random.default_rng(0)
    batches = [{'image': rng.standard_normal((16, 8, 8, 3), np.float32),
                'label': rng.integers(0, 10, 16).astype(np.int32)} for _ in range(3)]
    mesh = sharding.create_mesh()
    results = {}
    for group in (0, 2):
      model = models.create_model('resnet20', 10, stage_sizes=(1, 1, 1), bn_group_size=group)
      tx = optax.sgd(0.1, momentum=0.9)
      init = lambda: steps.init_train_state(model, tx, jax.random.key(0), (8, 8, 3))
      new_step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx,
                                           learning_rate_fn=lambda s: 0.1, mesh=mesh))
      old_step = plain_jit_step(model, tx)
      new, old = init(), init()
      for batch in batches:
        new = new_step(new, sharding.to_global(batch, sharding.batch_sharding(mesh)))[0]
        old = old_step(old, batch)
      for name, state in (('init', init()), ('shard_map', new), ('plain_jit', old)):
        flat = flax.traverse_util.flatten_dict(state.variables, sep='/')
        results.update({f'{group}/{name}/{k}': np.asarray(v) for k, v in flat.items()})
    np.savez(sys.argv[1], **results)
''')


@pytest.fixture(scope='module')
def data_parallel_runs(tmp_path_factory):
  """{devices: {'<bn_group_size>/<implementation>/<variable>': array}} after three steps."""
  runs = {}
  for devices in (1, 8):
    path = str(tmp_path_factory.mktemp('steps') / f'{devices}.npz')
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
    subprocess.run([sys.executable, '-c', DATA_PARALLEL_STEPS, path], cwd=ROOT, env=env,
                   check=True, timeout=600)
    runs[devices] = dict(np.load(path))
  return runs


def _variables(run, group, name):
  return {k.split('/', 2)[2]: v for k, v in run.items() if k.startswith(f'{group}/{name}/')}


@pytest.mark.e2e
@pytest.mark.parametrize('group', [0, 2], ids=['global_bn', 'grouped_bn'])
@pytest.mark.parametrize('devices', [1, 8])
def test_float32_steps_match_jit_partitioning_of_the_global_batch(data_parallel_runs, devices,
                                                                  group):
  """Three steps: params and BatchNorm statistics as the plain jitted step computes them."""
  run = data_parallel_runs[devices]
  new, old = _variables(run, group, 'shard_map'), _variables(run, group, 'plain_jit')
  start = _variables(run, group, 'init')
  assert new.keys() == old.keys() and len(new) > 20
  for key in new:
    np.testing.assert_allclose(new[key], old[key], rtol=1e-5, atol=1e-6, err_msg=key)
  assert any(not np.allclose(new[k], start[k], rtol=1e-3) for k in new)  # They trained.


@pytest.mark.e2e
@pytest.mark.parametrize('group', [0, 2], ids=['global_bn', 'grouped_bn'])
def test_eight_devices_match_one(data_parallel_runs, group):
  one = _variables(data_parallel_runs[1], group, 'shard_map')
  eight = _variables(data_parallel_runs[8], group, 'shard_map')
  for key in one:
    np.testing.assert_allclose(eight[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
