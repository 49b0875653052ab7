"""Loss and metrics of the train and eval steps against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from resnet_jax import models, steps


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
  model = models.create_model('resnet20', 10, stage_sizes=(1, 1, 1))
  tx = optax.sgd(0.1)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  batch = {'image': x, 'label': jnp.array([0, 1, 2, 3])}
  state = steps.init_train_state(model, tx, jax.random.key(1), (8, 8, 3))
  new_state, metrics = steps.train_step(state, batch, model=model, tx=tx,
                                        learning_rate_fn=lambda s: 0.1)

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
