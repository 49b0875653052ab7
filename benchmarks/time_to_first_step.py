"""Time to first step: initialising a net and compiling its train step, unrolled and scanned.

    python -m benchmarks.time_to_first_step --nets=resnet110,resnet1202,preact_resnet1001 \
        --layouts=unrolled,scanned --timeout_s=600 --repeats=2

Each (net, layout) runs in a process of its own, so nothing compiled for one serves another: the
project's training program (``train.build_program``, float32, the CPU workarounds as training
uses them) on random inputs, batch 8 for CIFAR nets and 2 for ImageNet nets at 224. It times
``init`` (compile and run), the train step's compilation, its first run, and the median of
``--steps`` more steps; of ``--repeats`` processes, the fastest to its first step is reported
(other work on a shared machine only ever adds time; the last column is the 1-minute load
average when it ended, 2 for two busy cores). ``unrolled`` is one module per block
(``model.scan_blocks=False``), ``scanned`` runs every stage's blocks after its first as one scan
(``True``), ``default`` scans the stages of at least ``models.SCAN_MIN_BLOCKS`` blocks
(``None``). A process still busy after ``--timeout_s`` is stopped (and not repeated), and the
phase it was in is reported as more than the time it had run.
"""

import json
import os
import selectors
import signal
import subprocess
import sys
import time

import jax
from absl import app, flags

from benchmarks.settings import Settings, program, synthetic_batch
from resnet_jax import models
from resnet_jax.parallel import sharding

FLAGS = flags.FLAGS
flags.DEFINE_list('nets', ['resnet110', 'resnet1202', 'preact_resnet1001', 'resnet152'],
                  'Names of resnet_jax.models.')
flags.DEFINE_list('layouts', ['unrolled', 'scanned'],
                  'Any of unrolled, scanned and default (the net\'s own: models.SCAN_MIN_BLOCKS).')
flags.DEFINE_integer('timeout_s', 900, 'Stop a (net, layout) after this many seconds.')
flags.DEFINE_integer('steps', 3, 'Steps timed after the first (their median is reported).')
flags.DEFINE_integer('repeats', 1, 'Processes per (net, layout); the fastest is reported.')
flags.DEFINE_string('child', None, 'NET:LAYOUT: time one in this process (used by the parent).')

LAYOUTS = {'unrolled': False, 'scanned': True, 'default': None}
PHASES = ('init_s', 'compile_s', 'first_step_s', 'step_s')


def batch_size(net: str) -> int:
  return 8 if models.model_family(net) == 'cifar' else 2


def time_one(net: str, layout: str, steps: int) -> None:
  """Prints one JSON line per phase as it ends: {'phase': seconds}."""
  settings = Settings(model=net, batch_size=batch_size(net))
  run_program = program(settings, scan_blocks=LAYOUTS[layout])
  report = lambda phase, seconds: print(json.dumps({phase: seconds}), flush=True)
  start = time.perf_counter()
  state = jax.block_until_ready(run_program.init(jax.random.key(0)))
  report('init_s', time.perf_counter() - start)
  batch = sharding.to_global(synthetic_batch(settings), run_program.batch_sharding)
  start = time.perf_counter()
  step = jax.jit(run_program.train_step, donate_argnums=0).lower(state, batch).compile()
  report('compile_s', time.perf_counter() - start)
  times = []
  for _ in range(steps + 1):
    start = time.perf_counter()
    state = jax.block_until_ready(step(state, batch)[0])
    times.append(time.perf_counter() - start)
  report('first_step_s', times[0])
  report('step_s', sorted(times[1:])[len(times[1:]) // 2])


def measure(net: str, layout: str, timeout_s: int, steps: int) -> dict:
  """The phases' seconds of one (net, layout) in a child process; 'stopped' names the phase
  that was still running after ``timeout_s`` (its entry is then the time it had run)."""
  command = [sys.executable, '-m', 'benchmarks.time_to_first_step', f'--child={net}:{layout}',
             f'--steps={steps}']
  child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True,
                           env=dict(os.environ, JAX_PLATFORMS='cpu'))
  selector = selectors.DefaultSelector()
  selector.register(child.stdout, selectors.EVENT_READ)
  result, start = {}, time.perf_counter()
  phase_start = start
  while len(result) < len(PHASES):
    left = timeout_s - (time.perf_counter() - start)
    line = child.stdout.readline() if left > 0 and selector.select(left) else None
    if not line:
      break
    result.update(json.loads(line))
    phase_start = time.perf_counter()
  if len(result) < len(PHASES):
    if child.poll() is None:
      os.killpg(child.pid, signal.SIGKILL)
      result['stopped'] = PHASES[len(result)]
      result[result['stopped']] = time.perf_counter() - phase_start
    else:
      result['failed'] = f'exit code {child.returncode}'
  child.wait()
  return result


def fastest(net: str, layout: str, repeats: int, timeout_s: int, steps: int) -> dict:
  """The measurement of ``repeats`` processes whose first step came soonest; the first alone
  where it was stopped or failed."""
  results = [measure(net, layout, timeout_s, steps)]
  while len(results) < repeats and not results[0].keys() & {'stopped', 'failed'}:
    results.append(measure(net, layout, timeout_s, steps))
  return min(results, key=lambda r: sum(r.get(p, 0) for p in PHASES[:3]))


def cell(result: dict, phase: str) -> str:
  if phase not in result:
    return '—'
  stopped = result.get('stopped') == phase
  return f'> {result[phase]:.0f} s (stopped)' if stopped else f'{result[phase]:.2f} s'


def main(argv):
  del argv
  if FLAGS.child:
    time_one(*FLAGS.child.split(':'), steps=FLAGS.steps)
    return
  print('| net | batch | layout | init | train step compile | first step | init + compile + '
        'first step | later steps (median) | load average after |')
  print('|---|---|---|---|---|---|---|---|---|')
  for net in FLAGS.nets:
    for layout in FLAGS.layouts:
      result = fastest(net, layout, FLAGS.repeats, FLAGS.timeout_s, FLAGS.steps)
      total = sum(result.get(p, 0) for p in PHASES[:3])
      first = f'> {total:.0f} s' if 'stopped' in result else f'{total:.1f} s'
      print(f'| {net} | {batch_size(net)} | {layout} | {cell(result, "init_s")} | '
            f'{cell(result, "compile_s")} | {cell(result, "first_step_s")} | '
            f'{result.get("failed", first)} | {cell(result, "step_s")} | '
            f'{os.getloadavg()[0]:.1f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
