"""Timers of the project's compiled calls: the bare train step, the eval forward pass and the
device-resident CIFAR path, on synthetic data already on the device.

    python -m benchmarks.harness --parts=step,forward,device_step --steps_per_call=10
"""

import jax
import numpy as np

from benchmarks.settings import Settings, program, synthetic_batch
from benchmarks.timing import Timer, compile_with_flops
from resnet_jax import train
from resnet_jax.data import device_resident
from resnet_jax.parallel import sharding


def train_step_timer(settings: Settings, impl: str, batch, cpu_fusion_barriers=True,
                     **model_overrides) -> Timer:
  """The bare jitted train step (real optimizer, donated state) on ``batch``."""
  run_program = program(settings, cpu_fusion_barriers=cpu_fusion_barriers, **model_overrides)
  state = run_program.init(jax.random.key(0))
  step_fn, compile_s, flops = compile_with_flops(
      jax.jit(run_program.train_step, donate_argnums=0), state, batch)
  holder = [state]

  def run_step():
    holder[0], _ = step_fn(holder[0], batch)

  note = f'cpu_fusion_barriers={cpu_fusion_barriers}'
  return Timer('train_step', impl, run_step, lambda: jax.block_until_ready(holder[0]),
               settings.batch_size, flops=flops, compile_s=compile_s, note=note)


def device_batch(settings: Settings, run_program: train.Program):
  """The synthetic batch, split over the program's devices."""
  return sharding.to_global(synthetic_batch(settings), run_program.batch_sharding)


def jax_timers(settings: Settings, parts, compare_fusion_barriers: bool) -> list[Timer]:
  """The bare train step (and, if asked, with fusion barriers flipped) and the eval forward."""
  run_program = program(settings)
  batch = device_batch(settings, run_program)
  timers = []
  if 'step' in parts:
    timers.append(train_step_timer(settings, 'jax', batch))
    if compare_fusion_barriers:
      timers.append(train_step_timer(settings, 'variant: cpu_fusion_barriers off', batch,
                                     cpu_fusion_barriers=False))
  if 'forward' in parts:
    model, variables = run_program.model, run_program.init(jax.random.key(0)).variables
    forward, compile_s, flops = compile_with_flops(
        jax.jit(lambda variables, x: model.apply(variables, x, train=False)),
        variables, batch['image'])
    logits = [None]

    def run_forward():
      logits[0] = forward(variables, batch['image'])

    timers.append(Timer('forward', 'jax', run_forward, lambda: jax.block_until_ready(logits[0]),
                        settings.batch_size, flops=flops, compile_s=compile_s))
  return timers


def device_step_timer(settings: Settings) -> Timer:
  """The device-resident path on a synthetic CIFAR-sized split (50,000 images)."""
  num_examples = 50_000
  steps_per_epoch = num_examples // settings.batch_size
  run_program = program(settings)
  rng = np.random.default_rng(0)
  data = device_resident.put_on_devices(
      rng.standard_normal((num_examples, *settings.image_shape), np.float32),
      rng.integers(0, 10, num_examples).astype(np.int32), run_program.mesh)
  train_fn = device_resident.make_train_fn(
      run_program.train_step, data, run_program.mesh, seed=0, batch_size=settings.batch_size,
      steps_per_epoch=steps_per_epoch, pad=4, flip=True)
  holder, steps_per_call = [run_program.init(jax.random.key(0))], settings.steps_per_call

  def run():
    holder[0], _ = train_fn(holder[0], steps_per_call)

  return Timer('device_step', 'jax', run, lambda: jax.block_until_ready(holder[0]),
               settings.batch_size, steps_per_run=steps_per_call,
               note=f'{steps_per_call} steps per call, pad-crop-flip in the step')
