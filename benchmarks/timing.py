"""One way to time anything, interleaved so that all timers see the same machine."""

import dataclasses
import statistics
import time
from collections.abc import Callable


@dataclasses.dataclass
class Timer:
  """Something to time: ``run()`` does ``steps_per_run`` steps, ``sync()`` waits for them."""
  part: str
  impl: str
  run: Callable[[], None]
  sync: Callable[[], None]
  images_per_step: int
  steps_per_run: int = 1
  flops: float | None = None  # Per step, by XLA's cost analysis of the per-device program.
  compile_s: float | None = None  # When known apart from the first call (JAX's compile).
  note: str = ''
  cpu_s: Callable[[], float] | None = None  # CPU seconds used so far by what ``run`` uses.


def time_all(timers: list[Timer], *, repeats: int, steps: int,
             peak_tflops: float = 0) -> list[dict]:
  """The first call of each timer, then ``repeats`` rounds of one window of each.

  Interleaving gives every timer the same share of a shared machine's quiet and busy moments,
  so their ratios hold even when the absolute figures move. A window is ``steps`` runs (one
  run when a run is several steps), synced at its end; step_s is the median window per step,
  min_step_s the fastest; cpu_step_s (timers with ``cpu_s``) the median CPU seconds per step,
  which other processes' load moves less than wall time.
  """
  first = []
  for timer in timers:
    start = time.perf_counter()
    timer.run()
    timer.sync()
    first.append(time.perf_counter() - start)
    timer.run()
    timer.sync()  # One more warm-up: allocations, caches, lazy initialisation.
  windows, cpu_windows = [[] for _ in timers], [[] for _ in timers]
  for _ in range(repeats):
    for timer, timed, cpu_timed in zip(timers, windows, cpu_windows):
      runs = steps if timer.steps_per_run == 1 else 1
      cpu_start = timer.cpu_s() if timer.cpu_s else 0.0
      start = time.perf_counter()
      for _ in range(runs):
        timer.run()
      timer.sync()
      timed.append((time.perf_counter() - start) / (runs * timer.steps_per_run))
      if timer.cpu_s:
        cpu_timed.append((timer.cpu_s() - cpu_start) / (runs * timer.steps_per_run))
  results = []
  for timer, first_s, timed, cpu_timed in zip(timers, first, windows, cpu_windows):
    timing = dict(compile_s=first_s if timer.compile_s is None else timer.compile_s,
                  step_s=statistics.median(timed), min_step_s=min(timed))
    if cpu_timed:
      timing['cpu_step_s'] = statistics.median(cpu_timed)
    results.append(row(timer.part, timer.impl, timing, timer.images_per_step, timer.flops,
                       timer.note, peak_tflops))
  return results


def time_steps(run, sync, *, repeats: int, steps: int) -> dict:
  """The timing of one thing on its own (see ``time_all``)."""
  timing, = time_all([Timer('', '', run, sync, 0)], repeats=repeats, steps=steps)
  return {k: timing[k] for k in ('compile_s', 'step_s', 'min_step_s')}


def row(part, impl, timing, images_per_step, flops=None, note='', peak_tflops: float = 0):
  """One result: timing plus images/s, FLOPs, TFLOP/s and MFU (for ``peak_tflops``) where known."""
  result = dict(part=part, impl=impl, **timing, note=note)
  if images_per_step:
    result['images_per_s'] = images_per_step / timing['step_s']
    result['best_images_per_s'] = images_per_step / timing['min_step_s']
    if 'cpu_step_s' in timing:
      result['images_per_cpu_s'] = images_per_step / timing['cpu_step_s']
  if flops:
    result['flops_per_step'] = flops
    result['tflops'] = flops / timing['step_s'] / 1e12
    if peak_tflops:  # XLA's count is of the per-device program: one device's peak.
      result['mfu'] = result['tflops'] / peak_tflops
  return result


def compile_with_flops(jitted, *args):
  """(compiled, seconds to lower and compile, FLOPs by XLA's cost analysis of the program)."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - start
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # One dict per device in some versions.
    analysis = analysis[0]
  return compiled, seconds, float(analysis.get('flops', 0.0))
