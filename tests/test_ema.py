"""Weight averaging (config.ema): the average against its formula written out in numpy, its
checkpoints and resume, its evaluations, and the choice of it by load_run, tools/evaluate.py and
exports."""

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import digits
from resnet_jax import checkpointing, ema, events, models, notebook, steps, train
from resnet_jax.errors import CheckpointError, ConfigError
from resnet_jax.evaluation import protocols
from resnet_jax.parallel import multistep, sharding
from tests.harness import ROOT, evaluated_lines, plan_of, tiny_step_inputs

METRICS = ('loss', 'error_top1', 'error_top5')


def numpy_average(history, decay, every, warmup):
  """The average of ``history`` (the weights after steps 0, 1, ...) as TensorFlow's
  ExponentialMovingAverage with num_updates computes it, updated at every ``every``-th step."""
  average = [np.asarray(x, np.float64) for x in history[0]]
  updates = 0
  for step, weights in enumerate(history[1:], start=1):
    if step % every:
      continue
    d = min(decay, (1 + updates) / (10 + updates)) if warmup else decay
    average = [d * a + (1 - d) * np.asarray(w, np.float64) for a, w in zip(average, weights)]
    updates += 1
  return average


@pytest.mark.parametrize('decay, every, warmup', [(0.2, 2, True), (0.7, 1, False),
                                                  (0.5, 3, False)])
def test_average_of_params_and_batch_stats_follows_the_formula(decay, every, warmup):
  model, tx, state, batch = tiny_step_inputs(channels=3)
  state = steps.start_train_state(tx, state.variables, averaged=True)
  averaging = ema.Averaging(decay=decay, warmup=warmup, every=every)
  step = jax.jit(functools.partial(
      steps.train_step, model=model, tx=tx, learning_rate_fn=lambda s: 0.1,
      mesh=sharding.create_mesh(), averaging=averaging))
  history = [jax.tree.leaves(state.variables)]
  for _ in range(6):
    state, _ = step(state, batch)
    history.append(jax.tree.leaves(state.variables))
  # The weights moved (else any average would pass), BatchNorm statistics included.
  assert not np.allclose(history[-1][0], history[0][0])
  assert jax.tree.structure(state.ema) == jax.tree.structure(state.variables)
  for got, want in zip(jax.tree.leaves(state.ema), numpy_average(history, decay, every, warmup)):
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)


def test_steps_looped_in_one_call_average_as_steps_called_one_by_one():
  # Accelerators loop a call's steps in lax.scan (parallel/multistep.py); the CPU unrolls them.
  model, tx, state, batch = tiny_step_inputs(channels=3)
  state = steps.start_train_state(tx, state.variables, averaged=True)
  step = functools.partial(
      steps.train_step, model=model, tx=tx, learning_rate_fn=lambda s: 0.1,
      mesh=sharding.create_mesh(), averaging=ema.Averaging(decay=0.2, warmup=True, every=2))
  finals = [jax.jit(functools.partial(multistep.run_steps, step, unroll=unroll))(
      state, [batch] * 5)[0] for unroll in (False, True)]
  assert [int(f.step) for f in finals] == [5, 5]
  for x, y in zip(jax.tree.leaves(finals[0].ema), jax.tree.leaves(finals[1].ema)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_without_averaging_the_state_has_no_average_and_no_more_leaves():
  model, tx, state, batch = tiny_step_inputs(channels=3)
  assert state.ema is None
  new_state, _ = jax.jit(functools.partial(
      steps.train_step, model=model, tx=tx, learning_rate_fn=lambda s: 0.1,
      mesh=sharding.create_mesh()))(state, batch)
  assert new_state.ema is None
  assert len(jax.tree.leaves(new_state)) == len(jax.tree.leaves(
      (new_state.step, new_state.variables, new_state.opt_state)))


def test_layout_conversion_converts_the_average_like_the_params():
  model = models.create_model('resnet20', 10, stage_sizes=(3, 3, 3), scan_blocks=True)
  _, tx, _, _ = tiny_step_inputs(channels=3)
  variables = steps.init_variables(model, jax.random.key(0), (8, 8, 3))
  state = steps.start_train_state(tx, variables, averaged=True)
  state = state.replace(ema=jax.tree.map(lambda x: x + 1, state.ema))
  unrolled = models.unrolled(state)
  assert models.stacked_stages(state.ema) == {'stage1', 'stage2', 'stage3'}
  assert models.stacked_stages(unrolled.ema) == frozenset()
  stacked = state.ema['params']['stage2_blocks']['conv1']['kernel']
  np.testing.assert_array_equal(unrolled.ema['params']['stage2_block3']['conv1']['kernel'],
                                stacked[1])
  np.testing.assert_array_equal(unrolled.ema['params']['stage2_block3']['conv1']['kernel'],
                                unrolled.params['stage2_block3']['conv1']['kernel'] + 1)


@pytest.mark.parametrize('fields, message', [
    ({'decay': 1.0}, r'ema.decay=1.0 must be a number in \[0, 1\)'),
    ({'decay': -0.5}, r'ema.decay=-0.5 must be a number in \[0, 1\)'),
    ({'every': 0}, r'ema.every=0 must be a whole number of steps >= 1'),
])
def test_bad_fields_are_refused_with_the_plans_other_problems(fields, message):
  config = digits.get_config()
  config.ema.update(fields)
  config.batch_size = 0
  with pytest.raises(ConfigError, match=message) as error:
    plan_of(config)
  assert 'batch_size=0 must be positive' in str(error.value)


# ---- Runs in this process: 6 steps of ResNet-20 on digits, evaluated and checkpointed at 4, 6.


def short_config(data_dir, total_steps, decay, extra_evals=()):
  config = digits.get_config()
  config.extra_evals = extra_evals
  config.dataset.update(data_dir=data_dir, augment=True)
  config.update(batch_size=32, eval_batch_size=100, total_epochs=None, total_steps=total_steps,
                steps_per_call=2, log_every_steps=2, eval_every_steps=4,
                checkpoint_every_steps=4)
  config.optimizer.update(lr_boundaries=(4,), lr_boundaries_unit='steps', learning_rate=0.1)
  config.ema.update(decay=decay, warmup=True, every=2)
  return config


@pytest.fixture(scope='module')
def runs(data_dir, tmp_path_factory):
  """{name: (workdir, final state)}: averaged straight through (with an extra eval set),
  averaged and resumed at step 4, and not averaged."""
  root = tmp_path_factory.mktemp('ema_runs')
  found = {}
  for name, decay, stops, extra_evals in (('averaged', 0.9, (6,), ('head=digits:train[:100]',)),
                                          ('resumed', 0.9, (4, 6), ()),
                                          ('plain', 0.0, (6,), ())):
    workdir = str(root / name)
    for total_steps in stops:
      state = train.train_and_evaluate(
          short_config(data_dir, total_steps, decay, extra_evals), workdir)
    found[name] = workdir, state
  return found


def test_the_average_leaves_the_training_itself_unchanged(runs):
  for x, y in zip(jax.tree.leaves(runs['averaged'][1].variables),
                  jax.tree.leaves(runs['plain'][1].variables)):
    np.testing.assert_array_equal(x, y)


def test_a_resumed_run_ends_with_the_same_average_bit_for_bit(runs):
  (straight, state), (resumed, resumed_state) = runs['averaged'], runs['resumed']
  assert not np.array_equal(jax.tree.leaves(state.ema)[0], jax.tree.leaves(state.params)[0])
  for x, y in zip(jax.tree.leaves(state.ema), jax.tree.leaves(resumed_state.ema)):
    np.testing.assert_array_equal(x, y)
  for workdir in (straight, resumed):
    restored, step = checkpointing.restore_variables(workdir, weights='ema')
    assert step == 6
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(state.ema)):
      np.testing.assert_array_equal(x, y)


def test_checkpoints_hold_the_average_only_where_the_run_keeps_one(runs):
  for name, items in (('averaged', ['ema', 'model', 'opt_state', 'progress']),
                      ('plain', ['model', 'opt_state', 'progress'])):
    directory = os.path.join(checkpointing.checkpoint_dir(runs[name][0]), '6')
    assert sorted(i for i in os.listdir(directory) if os.path.isdir(os.path.join(directory, i))
                  and not i.startswith('_')) == items


def test_every_evaluation_scores_the_average_beside_the_weights(runs):
  results = events.read_results(runs['averaged'][0])
  assert [r['step'] for r in results] == [4, 6]
  for result in results:
    assert sorted(result) == sorted(['step', 'seconds'] + [
        f'{weights}{prefix}{metric}' for weights in ('', 'ema_') for prefix in ('eval_', 'head/')
        for metric in ('loss', 'error_top1', 'error_top5')])
  assert results[-1]['ema_eval_loss'] != results[-1]['eval_loss']
  scalars = events.read_scalars(runs['averaged'][0])
  assert scalars['ema_eval_error_top1'][0].tolist() == [4, 6]
  assert not any(k.startswith('ema_') for k in events.read_results(runs['plain'][0])[-1])


def hand_evaluation(run, variables):
  """Top-1 error and mean cross-entropy of ``variables`` on the whole eval split, in numpy."""
  images, labels = run.examples(run.plan.eval_sets[0].num_examples)
  logits = np.asarray(run.model.apply(variables, run.preprocess(images), train=False),
                      np.float64)
  log_probabilities = logits - logits.max(-1, keepdims=True)
  log_probabilities -= np.log(np.exp(log_probabilities).sum(-1, keepdims=True))
  return (np.mean(logits.argmax(-1) != labels),
          -np.mean(log_probabilities[np.arange(len(labels)), labels]))


def test_load_run_and_evaluate_choose_the_average(runs, tmp_path):
  workdir, state = runs['averaged']
  averaged, raw = notebook.load_run(workdir, weights='ema'), notebook.load_run(workdir)
  assert (averaged.weights, raw.weights) == ('ema', 'raw')
  metrics, raw_metrics = averaged.evaluate(), raw.evaluate()
  assert metrics['loss'] != raw_metrics['loss']
  error, loss = hand_evaluation(averaged, state.ema)
  assert metrics['error_top1'] == pytest.approx(error, abs=1e-6)
  assert metrics['loss'] == pytest.approx(loss, rel=1e-4)
  # What training recorded for the average at its last step.
  assert metrics['error_top1'] == events.read_results(workdir)[-1]['ema_eval_error_top1']
  center = protocols.evaluate_workdir(workdir, 'center', weights='ema')
  assert center['weights'] == 'ema' and center['step'] == 6
  assert center['error_top1'] == pytest.approx(error, abs=1e-6)
  assert protocols.evaluate_workdir(workdir, 'center')['error_top1'] == pytest.approx(
      raw_metrics['error_top1'], abs=1e-6)
  path = str(tmp_path / 'ema.msgpack')
  averaged.export(path)
  _, exported = notebook.load_exported(path, averaged.config)
  for x, y in zip(jax.tree.leaves(exported), jax.tree.leaves(state.ema)):
    np.testing.assert_array_equal(x, y)
  # The export says which weights it holds, and gives no others.
  predictor = notebook.load_predictor(path, weights='ema')
  assert predictor.weights == 'ema'
  for x, y in zip(jax.tree.leaves(predictor.variables), jax.tree.leaves(state.ema)):
    np.testing.assert_array_equal(x, y)
  with pytest.raises(ValueError, match="holds the 'ema' weights, not 'raw'"):
    notebook.load_predictor(path)
  assert notebook.load_predictor(workdir, weights='ema').weights == 'ema'


def test_a_run_without_an_average_says_so_when_asked_for_one(runs, data_dir):
  workdir = runs['plain'][0]
  with pytest.raises(CheckpointError, match='holds no weight average .*ema.decay=0'):
    notebook.load_run(workdir, weights='ema')
  with pytest.raises(ValueError, match="weights='best': choose one of 'raw', 'ema'"):
    notebook.load_run(workdir, weights='best')
  # Resuming it with averaging switched on would start an average from nowhere: refused.
  with pytest.raises(CheckpointError, match='this run averages its weights .* but the checkpoint holds no average'):
    train.train_and_evaluate(short_config(data_dir, 8, 0.9), workdir)


def test_eval_mode_prints_the_average_beside_the_weights(runs, capsys):
  workdir = runs['averaged'][0]
  returned = notebook.evaluate_latest(workdir)
  lines = evaluated_lines(capsys.readouterr().out)
  assert [line['set'] for line in lines] == [
      'test', 'head (digits:train[:100])', 'test (EMA)', 'head (digits:train[:100]) (EMA)']
  recorded = events.read_results(workdir)[-1]
  for line, prefix in zip(lines, ('eval_', 'head/', 'ema_eval_', 'ema_head/')):
    assert line['step'] == 6
    assert line['error_top1'] == round(100 * recorded[f'{prefix}error_top1'], 2)
    assert line['error_top5'] == round(100 * recorded[f'{prefix}error_top5'], 2)
    assert line['loss'] == pytest.approx(recorded[f'{prefix}loss'], rel=1e-3)
  assert returned == pytest.approx({m: recorded[f'eval_{m}'] for m in METRICS}, rel=1e-5)


@pytest.mark.e2e
def test_evaluate_command_chooses_the_average_with_one_flag(runs):
  (workdir, _), plain = runs['averaged'], runs['plain'][0]
  evaluate = lambda *flags: subprocess.run(
      [sys.executable, '-m', 'tools.evaluate', '--mode=center', *flags], cwd=ROOT,
      capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  result = evaluate(f'--workdir={workdir}', '--weights=ema')
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Evaluated the weights' moving average (EMA) of {workdir} at step 6: center error" in (
      result.stdout)
  with open(os.path.join(workdir, 'eval_center_ema.json')) as f:
    written = json.load(f)
  assert not os.path.exists(os.path.join(workdir, 'eval_center.json'))
  assert written['weights'] == 'ema' and written['step'] == 6
  assert written['error_top1'] == pytest.approx(
      events.read_results(workdir)[-1]['ema_eval_error_top1'], abs=1e-6)
  refused = evaluate(f'--workdir={plain}', '--weights=ema')
  assert refused.returncode == 2
  assert 'holds no weight average (EMA)' in refused.stderr
