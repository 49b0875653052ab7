"""What a run says of itself: its description when it starts (the parameter table to a file, two
log lines), and its result when it ends (``results.json`` and one line) or when it is started
again after it finished."""

import jax
from absl import logging
from clu import parameter_overview

from resnet_jax import console, eval_sets, events, run_plan, workdirs

PARAMETERS_FILE = 'parameters.txt'


def describe(plan: run_plan.RunPlan, workdir: str, params) -> None:
  """Writes the parameter table to ``workdir/parameters.txt`` and logs the run in two lines
  (the config is ``workdir/config.json``)."""
  workdirs.save_text(parameter_overview.get_parameter_overview(params), workdir, PARAMETERS_FILE)
  config, main = plan.config, plan.eval_sets[0]
  logging.info('Config: %s on %s, batch %d, eval split %s -> %s', config.model.name,
               main.dataset, config.batch_size, main.split,
               workdirs.path(workdir) / workdirs.CONFIG_FILE)
  logging.info('Parameters: %s in %d arrays -> %s',
               f'{parameter_overview.count_parameters(params):,}', len(jax.tree.leaves(params)),
               workdirs.path(workdir) / PARAMETERS_FILE)


def finish(plan: run_plan.RunPlan, workdir: str, result: dict, start_step: int,
           seconds: float) -> None:
  """Writes a finished run's result (``results.json``: its last evaluation and what it was)
  and logs it in one line."""
  main = plan.eval_sets[0]
  workdirs.save_json({'model': plan.config.model.name, 'dataset': main.dataset,
                      'eval_split': main.split, 'eval_examples': main.num_examples,
                      'total_steps': plan.total_steps, **result}, workdir,
                     events.FINAL_RESULT_FILE)
  logging.info('%s', result_line(plan, workdir, result, start_step, seconds))


def result_line(plan: run_plan.RunPlan, workdir: str, result: dict, start_step: int,
                seconds: float) -> str:
  """'Finished resnet20 on digits: test error 0.67 % (2/297), top-5 0.00 %, 368 steps in
  1 min 35 s -> WORKDIR': the main eval split's errors, the steps this launch trained."""
  steps_done = (f'{plan.total_steps} steps' if start_step == 0 else
                f'steps {start_step + 1}-{plan.total_steps}')
  return (f'Finished {plan.config.model.name} on {plan.eval_sets[0].dataset}: '
          f'{_main_errors(plan, result)}, {steps_done} in {console.duration(seconds)} '
          f'-> {workdir}')


def _main_errors(plan: run_plan.RunPlan, result: dict) -> str:
  main, prefix = plan.eval_sets[0], eval_sets.EVAL_PREFIX
  return console.errors(main.split, result[f'{prefix}error_top1'],
                        result[f'{prefix}error_top5'], main.num_examples)


def log_finished(plan: run_plan.RunPlan, workdir: str, step: int) -> None:
  """The line of a run started again after it finished: its result, where it has one."""
  final = events.read_final_result(workdir)
  result = f': {_main_errors(plan, final)}' if final else ''
  logging.info('Already finished: %s on %s, %d of %d steps%s -> %s', plan.config.model.name,
               plan.eval_sets[0].dataset, step, plan.total_steps, result, workdir)
