"""What mixup and cutmix cost in the train step: XLA's cost analysis of the step with and
without them, and the two steps timed side by side.

    python -m benchmarks.mixing_cost --model=resnet50 --batch_size=32 \
        --time_model=resnet20 --time_batch_size=128

Both programs are the training run's own (``train.build_program``, float32, random images):
the paper's step (integer labels, cross-entropy), and the step with mixup (alpha 0.2) and
cutmix (alpha 1.0) every batch, label smoothing 0.1 and the soft-target loss. Mixing runs
without a branch (an unmixed batch is blended with weight 0), so the analysis counts it in
full. The cost analysis compiles ``--model`` with every block unrolled (XLA counts a scanned
loop's body once); the timing compiles ``--time_model`` and runs the two steps interleaved
(``timing.time_all``): the median and fastest window of each, and the median CPU time of the
process per step, which other processes on a shared machine move less than wall time.
"""

import time

import jax
from absl import app, flags

from benchmarks.settings import Settings, bench_config, synthetic_batch
from benchmarks.timing import Timer, compile_with_flops, time_all
from resnet_jax import run_plan, train
from resnet_jax.parallel import sharding

FLAGS = flags.FLAGS
flags.DEFINE_string('model', 'resnet50', 'The net of the cost analysis.')
flags.DEFINE_integer('batch_size', 32, 'Its batch.')
flags.DEFINE_string('time_model', 'resnet20', 'The net of the timing.')
flags.DEFINE_integer('time_batch_size', 128, 'Its batch.')
flags.DEFINE_integer('steps', 5, 'Timed steps per window.')
flags.DEFINE_integer('repeats', 5, 'Timed windows of each step.')

VARIANTS = ('paper', 'mixup+cutmix')


def step_program(settings: Settings, variant: str) -> train.Program:
  config = bench_config(settings, scan_blocks=False)
  if variant == 'mixup+cutmix':
    config.mixup.update(mixup_alpha=0.2, cutmix_alpha=1.0)
    config.label_smoothing = 0.1
  return train.build_program(run_plan.resolve(config, devices=jax.device_count(), processes=1))


def compiled_step(settings: Settings, variant: str):
  """(program, compiled step, its state, batch, compile seconds, XLA's cost analysis)."""
  program = step_program(settings, variant)
  state = program.init(jax.random.key(0))
  batch = sharding.to_global(synthetic_batch(settings), program.batch_sharding)
  compiled, seconds, _ = compile_with_flops(jax.jit(program.train_step, donate_argnums=0),
                                            state, batch)
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return compiled, state, batch, seconds, analysis


def cost_rows(settings: Settings) -> list[dict]:
  rows = []
  for variant in VARIANTS:
    *_, seconds, analysis = compiled_step(settings, variant)
    rows.append({'variant': variant, 'compile_s': seconds, 'gflop': analysis['flops'] / 1e9,
                 'gbytes': analysis['bytes accessed'] / 1e9})
  return rows


def timers(settings: Settings) -> list[Timer]:
  found = []
  for variant in VARIANTS:
    compiled, state, batch, seconds, analysis = compiled_step(settings, variant)
    holder = [state]

    def run(compiled=compiled, holder=holder, batch=batch):
      holder[0], _ = compiled(holder[0], batch)

    found.append(Timer('train_step', variant, run,
                       lambda holder=holder: jax.block_until_ready(holder[0]),
                       settings.batch_size, flops=analysis['flops'], compile_s=seconds,
                       cpu_s=time.process_time))
  return found


def main(argv):
  del argv
  cost = Settings(model=FLAGS.model, batch_size=FLAGS.batch_size)
  rows = cost_rows(cost)
  print(f'XLA cost analysis, {FLAGS.model} batch {FLAGS.batch_size} at {cost.image_shape[0]} px:')
  for row in rows:
    print(f"  {row['variant']:>13}: {row['gflop']:10.2f} GFLOP {row['gbytes']:8.3f} GB accessed "
          f"(compiled in {row['compile_s']:.0f} s)")
  base, mixed = rows
  print(f"  mixup+cutmix / paper: FLOPs {mixed['gflop'] / base['gflop']:.4f}, bytes "
        f"{mixed['gbytes'] / base['gbytes']:.4f}")
  timed = Settings(model=FLAGS.time_model, batch_size=FLAGS.time_batch_size)
  results = time_all(timers(timed), repeats=FLAGS.repeats, steps=FLAGS.steps)
  print(f'Step time, {FLAGS.time_model} batch {FLAGS.time_batch_size} at '
        f'{timed.image_shape[0]} px, {FLAGS.repeats} interleaved windows of {FLAGS.steps} steps:')
  for result in results:
    print(f"  {result['impl']:>13}: median {1000 * result['step_s']:.1f} ms, fastest "
          f"{1000 * result['min_step_s']:.1f} ms, median CPU time "
          f"{1000 * result['cpu_step_s']:.1f} ms")
  paper, mixed = results
  print(f"  mixup+cutmix / paper: median {mixed['step_s'] / paper['step_s']:.4f}, fastest "
        f"{mixed['min_step_s'] / paper['min_step_s']:.4f}, median CPU time "
        f"{mixed['cpu_step_s'] / paper['cpu_step_s']:.4f}")


if __name__ == '__main__':
  app.run(main)
