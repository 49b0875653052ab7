"""Throughput of the project beside a PyTorch reference, on whatever device JAX and torch find.

Over 600 lines: the timing harness, the parts below and the report still share this file. They
are next to move into modules of their own (harness, JAX parts, torch parts, report); until
then each part is one function here, and photos, torch input and input timing are already out.

    python -m experiments.benchmark --model=resnet20 --batch_size=128 --dtype=float32 \\
        --parts=step,forward,device_step,torch,input,e2e --json_out=/tmp/bench.json

Parts (``--parts``, comma-separated):

* ``step``, ``forward``: the bare jitted train step (the real optimizer) and the eval forward
  pass on synthetic data already on the device: compile time, median step time, images/s, FLOPs
  per step from XLA's cost analysis and the model FLOP utilisation for ``--peak_tflops``.
* ``device_step``: the device-resident CIFAR path (resnet_jax/device_data.py): ``--steps_per_call``
  steps per call on a synthetic 50,000-image split, with the in-step augmentation.
* ``torch``: the PyTorch twin (experiments/torch_resnet.py), train step and forward, in every
  applicable configuration (channels_last, torch.compile; bf16 autocast when --dtype=bfloat16);
  the best one is the reference, and the ratios project / reference are printed.
* ``convs``: where the time goes: every distinct convolution of the model timed alone, forward,
  input gradient and filter gradient, in JAX and in torch.
* ``input``: the tf.data train preprocessing alone, images/s per dataset (digits is real;
  cifar10 comes from tfds.testing.mock_data unless --data_dir has it); ImageNet's train and eval
  preprocessing on real photographs beside PIL + torchvision, per thread count
  (``--input_threads``; experiments/input_benchmark.py).
* ``e2e``: ``train_and_evaluate``'s real loop on cifar10 (mock data unless prepared): tf.data
  one step per call (the default), tf.data and the device-resident path ``--steps_per_call``
  steps per call; images/s from its steps_per_sec summaries.

Take figures side by side in one run and quote ratios: a shared machine moves absolute numbers.
"""

import contextlib
import dataclasses
import datetime
import functools
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import cifar10, default, digits
from experiments import input_benchmark
from resnet_jax import config_lib, device_data, models, optim, steps, train

PARTS = ('step', 'forward', 'device_step', 'torch', 'convs', 'input', 'e2e')
FLAGS = flags.FLAGS
flags.DEFINE_string('model', 'resnet20', 'Any name of resnet_jax.models.MODEL_NAMES.')
flags.DEFINE_integer('batch_size', 128, 'Global batch size.')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
flags.DEFINE_integer('steps', 5, 'Timed steps per window.')
flags.DEFINE_integer('repeats', 5, 'Timed windows; the median window gives the step time.')
flags.DEFINE_float('peak_tflops', 0, 'Peak TFLOP/s of one device for the MFU (0: no MFU).')
flags.DEFINE_list('parts', ['step', 'forward', 'torch'], f'Any of {", ".join(PARTS)}.')
flags.DEFINE_list('torch_variants', ['eager', 'channels_last', 'compile', 'compile_cl'],
                  'Torch configurations to try; bf16 autocast follows --dtype.')
flags.DEFINE_bool('compare_fusion_barriers', True,
                  'Also time the train step with model.fusion_barriers flipped from its default '
                  'on this backend (on for CPU).')
flags.DEFINE_integer('steps_per_call', 10, 'Steps per call of device_step and of the e2e runs '
                     'that run several.')
flags.DEFINE_integer('e2e_steps', 60, 'Steps of each end-to-end run (logged every 10).')
flags.DEFINE_integer('e2e_repeats', 2, 'End-to-end runs of each input path, taking turns.')
flags.DEFINE_list('input_threads', ['1', '2'], 'Thread counts of the ImageNet input timings.')
flags.DEFINE_integer('input_batch_size', 64, 'Images per batch of the ImageNet input timings.')
flags.DEFINE_string('data_dir', None, 'tfds data_dir (default: a temporary one, mocked).')
flags.DEFINE_string('json_out', os.path.join(tempfile.gettempdir(), 'resnet_jax_bench.json'),
                    'Where the results go as JSON.')


# --------------------------------------------------------------------------------------------
# The harness: one way to time anything, interleaved so that all see the same machine.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Timer:
  """Something to time: ``run()`` does ``steps_per_run`` steps, ``sync()`` waits for them."""
  part: str
  impl: str
  run: Callable[[], None]
  sync: Callable[[], None]
  images_per_step: int
  steps_per_run: int = 1
  flops: Optional[float] = None  # Per step, by XLA's cost analysis of the per-device program.
  compile_s: Optional[float] = None  # When known apart from the first call (JAX's compile).
  note: str = ''
  cpu_s: Optional[Callable[[], float]] = None  # CPU seconds used so far by what ``run`` uses.


def time_all(timers: list[Timer]) -> list[dict]:
  """The first call of each timer, then ``--repeats`` rounds of one window of each.

  Interleaving gives every timer the same share of a shared machine's quiet and busy moments,
  so their ratios hold even when the absolute figures move. A window is ``--steps`` runs (one
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
  for _ in range(FLAGS.repeats):
    for timer, timed, cpu_timed in zip(timers, windows, cpu_windows):
      runs = FLAGS.steps if timer.steps_per_run == 1 else 1
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
                       timer.note))
  return results


def time_steps(run, sync) -> dict:
  """The timing of one thing on its own (see ``time_all``)."""
  timing, = time_all([Timer('', '', run, sync, 0)])
  return {k: timing[k] for k in ('compile_s', 'step_s', 'min_step_s')}


def row(part, impl, timing, images_per_step, flops=None, note=''):
  """One result: timing plus images/s, FLOPs, TFLOP/s and MFU where known."""
  result = dict(part=part, impl=impl, **timing, note=note)
  if images_per_step:
    result['images_per_s'] = images_per_step / timing['step_s']
    result['best_images_per_s'] = images_per_step / timing['min_step_s']
    if 'cpu_step_s' in timing:
      result['images_per_cpu_s'] = images_per_step / timing['cpu_step_s']
  if flops:
    result['flops_per_step'] = flops
    result['tflops'] = flops / timing['step_s'] / 1e12
    if FLAGS.peak_tflops:  # XLA's count is of the per-device program: one device's peak.
      result['mfu'] = result['tflops'] / FLAGS.peak_tflops
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


# --------------------------------------------------------------------------------------------
# The project: bare step, forward, device-resident path.
# --------------------------------------------------------------------------------------------


def bench_config(**model_overrides):
  config = default.get_config()
  config.model.update(name=FLAGS.model, dtype=FLAGS.dtype, **model_overrides)
  config.batch_size = FLAGS.batch_size
  return config


def image_shape():
  size = 32 if models.model_family(FLAGS.model) == 'cifar' else 224
  return (size, size, 3)


def num_classes():
  return 10 if models.model_family(FLAGS.model) == 'cifar' else 1000


def synthetic_batch(batch_size, seed=0):
  """Random inputs: constant ones would zero BatchNorm's variance (denormal slow paths)."""
  rng = np.random.default_rng(seed)
  return {'image': rng.standard_normal((batch_size, *image_shape()), np.float32),
          'label': rng.integers(0, num_classes(), batch_size).astype(np.int32)}


def jax_setup(steps_per_epoch=390, **model_overrides):
  """(mesh, model, tx, learning-rate schedule, replicated initial state) of the benchmark."""
  config = bench_config(**model_overrides)
  mesh = train.create_mesh()
  model = config_lib.build_model(config, num_classes())
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape())),
                                               train=False))
  tx, schedule = optim.create_optimizer(config, abstract['params'], steps_per_epoch)
  init = jax.jit(functools.partial(steps.init_train_state, model, tx, image_shape=image_shape()),
                 out_shardings=NamedSharding(mesh, P()))
  return mesh, model, tx, schedule, init(jax.random.key(0))


def train_step_timer(impl, batch, **model_overrides) -> Timer:
  """The bare jitted train step (real optimizer, donated state) on ``batch``."""
  _, model, tx, schedule, state = jax_setup(**model_overrides)
  step_fn, compile_s, flops = compile_with_flops(jax.jit(
      functools.partial(steps.train_step, model=model, tx=tx, learning_rate_fn=schedule),
      donate_argnums=0), state, batch)
  holder = [state]

  def run_step():
    holder[0], _ = step_fn(holder[0], batch)

  note = f'fusion_barriers={model.fusion_barriers}'
  return Timer('train_step', impl, run_step, lambda: jax.block_until_ready(holder[0]),
               FLAGS.batch_size, flops=flops, compile_s=compile_s, note=note)


def jax_timers(parts) -> list[Timer]:
  """The bare train step and the eval forward pass on a synthetic batch already on device."""
  mesh, model, tx, schedule, state = jax_setup()
  batch = train.to_global(synthetic_batch(FLAGS.batch_size), NamedSharding(mesh, P('data')))
  timers = []
  if 'step' in parts:
    timers.append(train_step_timer('jax', batch))
    if FLAGS.compare_fusion_barriers:
      timers.append(train_step_timer('variant: fusion_barriers flipped', batch,
                                     fusion_barriers=not model.fusion_barriers))
  if 'forward' in parts:
    variables = state.variables
    forward, compile_s, flops = compile_with_flops(
        jax.jit(lambda variables, x: model.apply(variables, x, train=False)),
        variables, batch['image'])
    logits = [None]

    def run_forward():
      logits[0] = forward(variables, batch['image'])

    timers.append(Timer('forward', 'jax', run_forward, lambda: jax.block_until_ready(logits[0]),
                        FLAGS.batch_size, flops=flops, compile_s=compile_s))
  return timers


def device_step_timer() -> Timer:
  """The device-resident path on a synthetic CIFAR-sized split (50,000 images)."""
  num_examples = 50_000
  steps_per_epoch = num_examples // FLAGS.batch_size
  mesh, model, tx, schedule, state = jax_setup(steps_per_epoch)
  rng = np.random.default_rng(0)
  data = device_data.put_on_devices(
      rng.standard_normal((num_examples, *image_shape()), np.float32),
      rng.integers(0, 10, num_examples).astype(np.int32), mesh)
  step_fn = functools.partial(steps.train_step, model=model, tx=tx, learning_rate_fn=schedule)
  train_fn = device_data.make_train_fn(step_fn, data, mesh, seed=0, batch_size=FLAGS.batch_size,
                                       steps_per_epoch=steps_per_epoch, pad=4, flip=True)
  holder, steps_per_call = [state], FLAGS.steps_per_call

  def run():
    holder[0], _ = train_fn(holder[0], steps_per_call)

  return Timer('device_step', 'jax', run, lambda: jax.block_until_ready(holder[0]),
               FLAGS.batch_size, steps_per_run=steps_per_call,
               note=f'{steps_per_call} steps per call, pad-crop-flip in the step')


# --------------------------------------------------------------------------------------------
# The PyTorch reference.
# --------------------------------------------------------------------------------------------

TORCH_VARIANTS = ('eager', 'channels_last', 'compile', 'compile_cl')


def torch_variant(torch, net, name):
  """(module to call, input memory format) of one configuration of ``net``."""
  channels_last = name in ('channels_last', 'compile_cl')
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  net = net.to(memory_format=fmt)
  return (torch.compile(net) if name.startswith('compile') else net), fmt


def torch_timers() -> list[Timer]:
  """Train step (SGD, momentum, weight decay, as the project) and forward of every variant."""
  import torch  # pylint: disable=import-outside-toplevel
  from experiments import torch_resnet  # pylint: disable=import-outside-toplevel
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  sync = torch.cuda.synchronize if device == 'cuda' else lambda: None
  bf16 = FLAGS.dtype == 'bfloat16'
  autocast = lambda: (torch.autocast(device, dtype=torch.bfloat16) if bf16
                      else contextlib.nullcontext())
  batch = synthetic_batch(FLAGS.batch_size)
  labels = torch.from_numpy(batch['label']).long().to(device)
  flax_model = config_lib.build_model(bench_config(), num_classes())
  timers = []
  for name in FLAGS.torch_variants:
    net = torch_resnet.torch_model_like(flax_model).to(device)
    module, fmt = torch_variant(torch, net, name)
    x = torch.from_numpy(batch['image'].transpose(0, 3, 1, 2)).to(device).contiguous(
        memory_format=fmt)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    eval_module = torch_variant(torch, torch_resnet.torch_model_like(flax_model).to(device).eval(),
                                name)[0]

    def train_step(module=module, optimizer=optimizer, x=x):
      optimizer.zero_grad(set_to_none=True)
      with autocast():
        loss = torch.nn.functional.cross_entropy(module(x), labels)
      loss.backward()
      optimizer.step()

    def forward(module=eval_module, x=x):
      with torch.no_grad(), autocast():
        module(x)

    impl = f'torch {name}' + (' bf16-autocast' if bf16 else '')
    timers += [Timer('train_step', impl, train_step, sync, FLAGS.batch_size),
               Timer('forward', impl, forward, sync, FLAGS.batch_size)]
  return timers


# --------------------------------------------------------------------------------------------
# Where the time goes: each convolution alone.
# --------------------------------------------------------------------------------------------


def model_convolutions() -> dict:
  """{(input shape, kernel shape, strides, padding): count} of the model's forward pass."""
  model = config_lib.build_model(bench_config(), num_classes())
  x = jnp.zeros((FLAGS.batch_size, *image_shape()))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1], train=False))
  closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)
  found = {}

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'conv_general_dilated':
        lhs, rhs = (v.aval.shape for v in eqn.invars)
        key = (lhs, rhs, tuple(eqn.params['window_strides']), tuple(eqn.params['padding']))
        found[key] = found.get(key, 0) + 1
      for param in eqn.params.values():
        inner = getattr(param, 'jaxpr', param)
        if hasattr(inner, 'eqns'):
          walk(inner)

  walk(closed.jaxpr)
  return found


def bench_convs() -> list[dict]:
  """Forward, input-gradient and filter-gradient time of each convolution, JAX and torch.

  torch's gradients are timed as forward + backward minus the forward.
  """
  import torch  # pylint: disable=import-outside-toplevel
  results = []
  timed = lambda run, sync: time_steps(run, sync)['step_s']
  for (lhs, rhs, strides, padding), count in model_convolutions().items():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(lhs, np.float32))
    w = jnp.asarray(rng.standard_normal(rhs, np.float32) / np.sqrt(np.prod(rhs[:-1])))
    conv = lambda x, w: jax.lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    g = jnp.asarray(rng.standard_normal(jax.eval_shape(conv, x, w).shape, np.float32))
    fns = {'forward': jax.jit(conv),
           'input_grad': jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
           'filter_grad': jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])}
    args = {'forward': (x, w), 'input_grad': (x, w, g), 'filter_grad': (x, w, g)}
    jax_s = {k: timed(lambda f=f, a=args[k]: f(*a).block_until_ready(), lambda: None)
             for k, f in fns.items()}
    tx = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).requires_grad_()
    tw = torch.from_numpy(np.asarray(w).transpose(3, 2, 0, 1).copy()).requires_grad_()
    tg = torch.from_numpy(np.asarray(g).transpose(0, 3, 1, 2).copy())
    tconv = lambda: torch.nn.functional.conv2d(tx, tw, stride=strides,
                                               padding=[p[0] for p in padding])
    with torch.no_grad():
      torch_forward = timed(tconv, lambda: None)
    torch_s = {'forward': torch_forward,
               'input_grad': timed(lambda: torch.autograd.grad(tconv(), tx, tg),
                                   lambda: None) - torch_forward,
               'filter_grad': timed(lambda: torch.autograd.grad(tconv(), tw, tg),
                                    lambda: None) - torch_forward}
    shape = f'{lhs[1]}x{lhs[2]}x{lhs[3]}->{rhs[-1]} k{rhs[0]} s{strides[0]} (x{count})'
    for impl, seconds in (('jax', jax_s), ('torch', torch_s)):
      results.append(dict(part='conv', impl=impl, note=shape, count=count,
                          **{f'{k}_ms': 1e3 * v for k, v in seconds.items()}))
  return results


# --------------------------------------------------------------------------------------------
# Input pipeline and end-to-end training (need tensorflow and tfds).
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def dataset(config, num_examples):
  """Serves config.dataset from --data_dir when prepared there, otherwise from mock data.

  Yields a note saying which.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from resnet_jax.mock_tfds import prepared_mock  # pylint: disable=import-outside-toplevel
  from resnet_jax import digits_dataset  # pylint: disable=import-outside-toplevel,unused-import
  name = config.dataset.name
  builder = tfds.builder(name, data_dir=FLAGS.data_dir)
  if name == 'digits' or builder.is_prepared():
    config.dataset.data_dir = FLAGS.data_dir
    yield 'real data'
    return
  with tempfile.TemporaryDirectory() as mock_dir:
    config.dataset.data_dir = mock_dir
    splits = ('train', 'validation' if name == 'imagenet2012' else 'test')
    with prepared_mock(name, mock_dir, num_examples, splits=splits):
      yield f'tfds.testing.mock_data ({num_examples} random examples)'


def bench_input() -> list[dict]:
  """Images/s of the digits and cifar10 train pipelines (tf.data, this process's batches) and
  of ImageNet's train and eval preprocessing on real photographs beside PIL + torchvision."""
  from resnet_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  results = time_all(input_benchmark.timers(Timer, [int(n) for n in FLAGS.input_threads],
                                            FLAGS.input_batch_size))
  for config, num_examples in ((digits.get_config(), 0), (cifar10.get_config(), 2048)):
    with dataset(config, num_examples) as note:
      batches = input_pipeline.train_batches(config, start_step=0, process_index=0,
                                             process_count=1)
      timing = time_steps(lambda: next(batches), lambda: None)
    results.append(row('input', config.dataset.name, timing, config.batch_size,
                       note=f'batch {config.batch_size}; {note}'))
  return results


def e2e_config(device_resident: bool, steps_per_call: int):
  config = cifar10.get_config(FLAGS.model)
  config.model.dtype = FLAGS.dtype
  config.dataset.device_resident = device_resident
  config.update(batch_size=FLAGS.batch_size, total_steps=FLAGS.e2e_steps, log_every_steps=10,
                eval_every_steps=FLAGS.e2e_steps, checkpoint_every_steps=FLAGS.e2e_steps,
                steps_per_call=steps_per_call)
  return config


def e2e_name(device_resident: bool, steps_per_call: int) -> str:
  path = 'device-resident' if device_resident else 'tf.data'
  return f'jax {path}, {steps_per_call} step{"s" * (steps_per_call > 1)} per call'


def bench_e2e() -> list[dict]:
  """train_and_evaluate on cifar10: images/s from its steps_per_sec summaries (the first out).

  Three runs take turns, ``--e2e_repeats`` times each: tf.data one step per call (the
  default), tf.data and the device-resident path with ``--steps_per_call``. The bare step is
  timed again just before each run: ratios that the machine's load moves less.
  """
  from resnet_jax import events  # pylint: disable=import-outside-toplevel
  mesh, *_ = jax_setup()
  step_timer = train_step_timer('jax', train.to_global(
      synthetic_batch(FLAGS.batch_size), NamedSharding(mesh, P('data'))))
  variants = tuple(dict.fromkeys(  # Two, not three, when --steps_per_call=1.
      ((False, 1), (False, FLAGS.steps_per_call), (True, FLAGS.steps_per_call))))
  rates, bare = ({variant: [] for variant in variants} for _ in range(2))
  for _, variant in itertools.product(range(FLAGS.e2e_repeats), variants):
    bare[variant].append(time_all([step_timer])[0]['images_per_s'])
    config = e2e_config(*variant)
    with dataset(config, 4096) as note, tempfile.TemporaryDirectory() as workdir:
      train.train_and_evaluate(config, workdir)
      rates[variant] += events.read_scalars(workdir)['steps_per_sec'][1][1:].tolist()
  results = []
  for variant in variants:
    timing = dict(compile_s=float('nan'), step_s=1 / statistics.median(rates[variant]),
                  min_step_s=1 / max(rates[variant]))
    result = row('e2e', e2e_name(*variant), timing, FLAGS.batch_size, note=(
        f'train_and_evaluate, {len(rates[variant])} reports of {FLAGS.e2e_repeats} runs; '
        f'{note}'))
    result['bare_step_before'] = statistics.median(bare[variant])
    results.append(result)
  return results


# --------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------


def best(results, part, prefix, key) -> dict | None:
  """The row of ``part`` whose impl starts with ``prefix`` and whose ``key`` is largest."""
  rows = [r for r in results if r['part'] == part and r['impl'].startswith(prefix) and key in r]
  return max(rows, key=lambda r: r[key], default=None)


def ratios(results, key) -> dict:
  """Project / reference and path / path ratios of ``key`` (median or best images/s)."""
  pairs = {
      'train_step jax / best torch': (best(results, 'train_step', 'jax', key),
                                      best(results, 'train_step', 'torch', key)),
      'forward jax / best torch': (best(results, 'forward', 'jax', key),
                                   best(results, 'forward', 'torch', key)),
      'train_step jax / fusion_barriers flipped': (
          best(results, 'train_step', 'jax', key),
          best(results, 'train_step', 'variant: fusion_barriers', key)),
      'device_step / train_step': (best(results, 'device_step', 'jax', key),
                                   best(results, 'train_step', 'jax', key)),
      'e2e device-resident / e2e tf.data, 1 step per call': (
          best(results, 'e2e', 'jax device', key), best(results, 'e2e', e2e_name(False, 1), key)),
      'e2e device-resident / e2e tf.data, same steps per call': (
          best(results, 'e2e', 'jax device', key),
          best(results, 'e2e', e2e_name(False, FLAGS.steps_per_call), key)),
      'e2e tf.data, steps per call / 1 step per call': (
          best(results, 'e2e', e2e_name(False, FLAGS.steps_per_call), key),
          best(results, 'e2e', e2e_name(False, 1), key)),
  }
  found = {name: a[key] / b[key] for name, (a, b) in pairs.items() if a and b}
  found.update(input_benchmark.ratios(results, key))
  for r in results:
    if 'bare_step_before' in r and key == 'images_per_s':
      found[f'e2e {r["impl"][4:]} / bare step timed just before'] = (
          r[key] / r['bare_step_before'])
  return found


def fmt(value, spec):
  """``value`` formatted, or a dash as wide as ``spec`` when it is unknown."""
  if isinstance(value, (int, float)) and value == value:
    return format(value, spec)
  return format('-', '>' + spec.split('.')[0])


def print_report(report):
  print(f"\n{report['device']}, {report['date']}; model {FLAGS.model}, batch "
        f"{FLAGS.batch_size}, {FLAGS.dtype}")
  header = (f"{'part':<12}{'impl':<34}{'compile s':>10}{'step ms':>10}{'min ms':>9}"
            f"{'images/s':>10}{'GFLOP/step':>11}{'TFLOP/s':>9}{'MFU':>7}  note")
  print(header + '\n' + '-' * len(header))
  for r in report['results']:
    if r['part'] == 'conv':
      print(f"{'conv':<12}{r['impl']:<34}  fwd {r['forward_ms']:.2f} ms, input grad "
            f"{r['input_grad_ms']:.2f} ms, filter grad {r['filter_grad_ms']:.2f} ms  {r['note']}")
      continue
    step_ms = r['step_s'] * 1e3 if 'step_s' in r else None
    min_ms = r['min_step_s'] * 1e3 if 'min_step_s' in r else None
    gflop = r['flops_per_step'] / 1e9 if 'flops_per_step' in r else None
    print(f"{r['part']:<12}{r['impl']:<34}{fmt(r.get('compile_s'), '10.1f')}"
          f"{fmt(step_ms, '10.1f')}{fmt(min_ms, '9.1f')}{fmt(r.get('images_per_s'), '10.0f')}"
          f"{fmt(gflop, '11.2f')}{fmt(r.get('tflops'), '9.3f')}{fmt(r.get('mfu'), '7.1%')}"
          f"  {r.get('note', '')}" + (f"; {r['images_per_cpu_s']:.0f} images per CPU second"
                                      if 'images_per_cpu_s' in r else ''))
  for name, value in report['ratios'].items():
    best_windows = report['best_window_ratios'].get(name)
    cpu_time = report['cpu_time_ratios'].get(name)
    print(f'ratio {name}: {value:.2f}' + (f' (fastest windows: {best_windows:.2f})'
                                          if best_windows else '')
          + (f' (per CPU second: {cpu_time:.2f})' if cpu_time else ''))


def cpu_name() -> str:
  """The host CPU's model name (Linux), else what platform knows."""
  with contextlib.suppress(OSError):
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  return platform.processor() or platform.machine()


def environment() -> dict:
  device = jax.devices()[0]
  versions = {'jax': jax.__version__, 'numpy': np.__version__}
  with contextlib.suppress(ImportError):
    import torch  # pylint: disable=import-outside-toplevel
    versions['torch'] = torch.__version__
  return dict(date=datetime.datetime.now().isoformat(timespec='seconds'),
              device=f'{jax.device_count()} x {device.platform} {device.device_kind} '
                     f'({os.cpu_count()} host cores, {cpu_name()})',
              versions=versions, xla_flags=os.environ.get('XLA_FLAGS', ''),
              flags={f: FLAGS[f].value for f in ('model', 'batch_size', 'dtype', 'steps',
                                                 'repeats', 'peak_tflops', 'parts',
                                                 'torch_variants', 'steps_per_call',
                                                 'e2e_steps', 'e2e_repeats')})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  unknown = set(FLAGS.parts) - set(PARTS) | set(FLAGS.torch_variants) - set(TORCH_VARIANTS)
  if unknown:
    raise app.UsageError(f'Unknown part or torch variant {sorted(unknown)}; parts: {PARTS}, '
                         f'torch variants: {TORCH_VARIANTS}.')
  if FLAGS.model not in models.MODEL_NAMES:
    raise app.UsageError(f'Unknown model {FLAGS.model!r}; use one of {models.MODEL_NAMES}.')
  parts = set(FLAGS.parts)
  cifar = models.model_family(FLAGS.model) == 'cifar'
  timers = []  # Timed together, interleaved.
  if parts & {'step', 'forward'}:
    timers += jax_timers(parts)
  if 'device_step' in parts and cifar:
    timers.append(device_step_timer())
  if 'torch' in parts:
    timers += torch_timers()
  results = time_all(timers) if timers else []
  for r in results:
    if r['part'] == 'device_step':
      r['note'] += f'; 64k steps: {64_000 * r["step_s"] / 60:.1f} min'
  if 'convs' in parts:
    results += bench_convs()
  if not cifar and parts & {'device_step', 'e2e'}:
    results.append(dict(part='skipped', impl='device_step, e2e', note='CIFAR-family only'))
    parts -= {'device_step', 'e2e'}
  with tempfile.TemporaryDirectory() as tmp:
    FLAGS.data_dir = FLAGS.data_dir or tmp
    if 'input' in parts:
      results += bench_input()
    if 'e2e' in parts:
      results += bench_e2e()
  report = dict(environment(), results=results, ratios=ratios(results, 'images_per_s'),
                best_window_ratios=ratios(results, 'best_images_per_s'),
                cpu_time_ratios=input_benchmark.ratios(results, 'images_per_cpu_s'))
  print_report(report)
  with open(FLAGS.json_out, 'w') as f:
    json.dump(report, f, indent=2, default=str)
  print(f'JSON: {FLAGS.json_out}')


if __name__ == '__main__':
  app.run(main)
