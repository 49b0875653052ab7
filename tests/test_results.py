"""A run's results file and its last line, in process (the run that writes them:
tests/test_train.py)."""

from resnet_jax import events, run_summary
from tests.harness import plan_of, tiny_digits_config


def test_results_keep_the_later_of_a_step_evaluated_twice_and_skip_an_unfinished_line(tmp_path):
  workdir = str(tmp_path)
  assert events.read_results(workdir) == []
  for step, error in ((3, 0.5), (6, 0.25), (6, 0.125)):  # Resumed from step 3, then step 6 again.
    events.append_result(workdir, {'step': step, 'eval_error_top1': error})
  with open(tmp_path / events.RESULTS_FILE, 'a') as f:
    f.write('{"step": 9, "eval_err')  # Killed while writing.
  assert events.read_results(workdir) == [{'step': 3, 'eval_error_top1': 0.5},
                                          {'step': 6, 'eval_error_top1': 0.125}]


def test_the_result_line_counts_the_errors_of_the_main_eval_split(data_dir):
  plan = plan_of(tiny_digits_config(data_dir, total_steps=368))
  assert plan.eval_sets[0].num_examples == 297  # 1,797 digits, the last 297 for testing.
  result = {'eval_error_top1': 2 / 297, 'eval_error_top5': 0.0}
  assert run_summary.result_line(plan, '/runs/quick', result, 0, 95.4) == (
      'Finished resnet20 on digits: test error 0.67 % (2/297), top-5 0.00 %, 368 steps in 1 min '
      '35 s -> /runs/quick')
  # Ties count in fractions: no count where the errors are not a whole number; a resumed run
  # names the steps it trained.
  result['eval_error_top1'] = 2.5 / 297
  assert run_summary.result_line(plan, '/runs/quick', result, 184, 40.0) == (
      'Finished resnet20 on digits: test error 0.84 %, top-5 0.00 %, steps 185-368 in 40 s '
      '-> /runs/quick')
