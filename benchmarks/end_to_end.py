"""End to end: ``train_and_evaluate``'s real loop on cifar10 (mock data unless prepared), tf.data
one step per call, tf.data and the device-resident path several steps per call.

    python -m benchmarks.harness --parts=step,e2e --e2e_repeats=2 --steps_per_call=10
"""

import itertools
import statistics
import tempfile

from benchmarks.settings import Settings, dataset, program
from benchmarks.step import device_batch, train_step_timer
from benchmarks.timing import row, time_all
from configs import cifar10
from resnet_jax import events, train


def e2e_config(settings: Settings, device_resident: bool, steps_per_call: int, total_steps: int):
  config = cifar10.get_config(settings.model)
  config.model.dtype = settings.dtype
  config.dataset.device_resident = device_resident
  config.update(batch_size=settings.batch_size, total_steps=total_steps, log_every_steps=10,
                eval_every_steps=total_steps, checkpoint_every_steps=total_steps,
                steps_per_call=steps_per_call)
  return config


def e2e_name(device_resident: bool, steps_per_call: int) -> str:
  path = 'device-resident' if device_resident else 'tf.data'
  return f'jax {path}, {steps_per_call} step{"s" * (steps_per_call > 1)} per call'


def bench_e2e(settings: Settings, total_steps: int, repeats: int) -> list[dict]:
  """train_and_evaluate on cifar10: images/s from its steps_per_sec summaries (the first out).

  Three runs take turns, ``repeats`` times each: tf.data one step per call (the default),
  tf.data and the device-resident path with ``settings.steps_per_call``. The bare step is
  timed again just before each run: ratios that the machine's load moves less.
  """
  step_timer = train_step_timer(settings, 'jax', device_batch(settings, program(settings)))
  variants = tuple(dict.fromkeys(  # Two, not three, when steps_per_call is 1.
      ((False, 1), (False, settings.steps_per_call), (True, settings.steps_per_call))))
  rates, bare = ({variant: [] for variant in variants} for _ in range(2))
  for _, variant in itertools.product(range(repeats), variants):
    bare[variant].append(time_all([step_timer], **settings.timing)[0]['images_per_s'])
    config = e2e_config(settings, *variant, total_steps)
    with dataset(config, 4096, settings.data_dir) as note, \
        tempfile.TemporaryDirectory() as workdir:
      train.train_and_evaluate(config, workdir)
      rates[variant] += events.read_scalars(workdir)['steps_per_sec'][1][1:].tolist()
  results = []
  for variant in variants:
    timing = dict(compile_s=float('nan'), step_s=1 / statistics.median(rates[variant]),
                  min_step_s=1 / max(rates[variant]))
    result = row('e2e', e2e_name(*variant), timing, settings.batch_size, note=(
        f'train_and_evaluate, {len(rates[variant])} reports of {repeats} runs; {note}'))
    result['bare_step_before'] = statistics.median(bare[variant])
    results.append(result)
  return results
