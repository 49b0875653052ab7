"""Compiles a config's train and eval calls for a TPU topology, here, and reports the plan.

    pip install -r requirements-tpu.txt
    python -m tools.tpu_plan --config=configs/imagenet_r50.py --topology=v5e:4x4 \\
        [--config.model.bn_group_size=32 ...] [--json_out=/tmp/plan.json]

libtpu compiles for any TPU slice without a TPU: ``get_topology_desc`` gives the slice's devices
(every host's), and the calls that ``train.train_and_evaluate`` runs (``train.build_program``:
the same mesh, model, optimizer, global batch, shardings, steps per call and donation, on batches
of the input pipeline's dtypes and shapes) are lowered with abstract arguments and compiled by
XLA:TPU. Nothing runs and no data is read. Printed:
compile time, HBM per chip against the chip's capacity (exit 1 if it does not fit), FLOPs and
bytes per chip from XLA's cost analysis, the collectives in the compiled call, the bytes per
parameter of one step's gradient all-reduce (found by the parameters' shapes), and a roofline
estimate of the step time (the slower of compute at peak FLOP/s and HBM traffic at peak
bandwidth; collectives' latency and the input pipeline are not in it).

Only the tf.data input path is planned (``dataset.device_resident=False``). The run's plan is
resolved as a run resolves it (``run_plan.resolve``, from the registry's facts: no TensorFlow), so
its steps per epoch and schedule are the run's; they are in the JSON output.
"""

import dataclasses
import json
import math
import os
import re
import sys
import time

# Compiling only: no metadata server to ask, nothing to run on a TPU, and no need for libtpu's
# one-process-per-machine lock (/tmp/libtpu_lockfile), so plans and tests may run side by side.
os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')

# pylint: disable=wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from resnet_jax import errors, models, run_plan, train
from resnet_jax.data import registry

FLAGS = flags.FLAGS


def define_flags():
  """The command line flags (defined on demand, so that tests can import this module)."""
  flags.DEFINE_string('topology', None, 'TPU slice, CHIP:SHAPE, e.g. v5e:4x4, v5p:2x2x2, '
                      'v4:2x2x2, v6e:2x4.')
  flags.DEFINE_string('json_out', None, 'Also write the plan as JSON here.')
  flags.DEFINE_multi_enum('parts', ['train', 'eval'], ['train', 'eval'], 'The calls to compile.')
  config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. '
                                  'configs/imagenet_r50.py.', lock_config=True)
  flags.mark_flags_as_required(['config', 'topology'])

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures (cloud.google.com/tpu/docs/<chip>)."""
  hbm_bytes: int
  peak_bf16_flops: float
  hbm_bytes_per_s: float


CHIPS = {
    'v4': Chip(hbm_bytes=32 * GIB, peak_bf16_flops=275e12, hbm_bytes_per_s=1200e9),
    'v5e': Chip(hbm_bytes=16 * GIB, peak_bf16_flops=197e12, hbm_bytes_per_s=819e9),
    'v5p': Chip(hbm_bytes=95 * GIB, peak_bf16_flops=459e12, hbm_bytes_per_s=2765e9),
    'v6e': Chip(hbm_bytes=32 * GIB, peak_bf16_flops=918e12, hbm_bytes_per_s=1638e9),
}

_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'bf16': 2, 'f16': 2, 's16': 2, 'u16': 2, 'f32': 4,
                's32': 4, 'u32': 4, 'f64': 8, 's64': 8, 'u64': 8}
_COLLECTIVE = re.compile(r'= (.*?) (all-reduce|all-gather|reduce-scatter|collective-permute|'
                         r'all-to-all)(-start)?\(')
_ARRAY = re.compile(r'\b([a-z]+\d*)\[([\d,]*)\]')


class PlanError(ValueError):
  """A topology or config that cannot be planned; the message says what to change."""


def topology_devices(name: str):
  """The devices of every host of the TPU slice ``name`` (``CHIP:SHAPE``)."""
  chip = name.split(':')[0]
  if chip not in CHIPS or ':' not in name:
    raise PlanError(f'--topology={name!r}: use CHIP:SHAPE with CHIP one of {", ".join(CHIPS)}, '
                    'e.g. v5e:4x4 or v5p:2x2x2.')
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    return topologies.get_topology_desc(platform='tpu', topology_name=name).devices
  except Exception as error:  # noqa: BLE001 (libtpu missing, or a shape the chip lacks)
    raise PlanError(f'Cannot describe TPU topology {name!r}: {error}. Compiling for TPUs needs '
                    'libtpu (pip install -r requirements-tpu.txt) and a slice shape that exists '
                    'for the chip (v5e/v6e: AxB, v4/v5p: AxBxC).') from None


def _arrays(shape_text: str) -> list[tuple[int, tuple[int, ...]]]:
  """(bytes per element, dims) of each array in an HLO shape (a tuple's elements in order)."""
  return [(_DTYPE_BYTES.get(dtype, 4), tuple(int(d) for d in filter(None, dims.split(','))))
          for dtype, dims in _ARRAY.findall(shape_text)]


def _array_bytes(shape_text: str) -> list[int]:
  return [item * math.prod(dims) for item, dims in _arrays(shape_text)]


def collectives(hlo_text: str) -> dict:
  """``{kind: {'count', 'bytes'}}`` of the collectives in compiled HLO text (async ones once)."""
  found = {}
  for shape_text, kind, start in _COLLECTIVE.findall(hlo_text):
    sizes = _array_bytes(shape_text)
    # An async all-gather / permute start holds (operand, result): count the larger.
    size = max(sizes) if start and kind != 'all-reduce' else sum(sizes)
    entry = found.setdefault(kind, {'count': 0, 'bytes': 0})
    entry['count'] += 1
    entry['bytes'] += size
  return found


def gradient_allreduce(hlo_text: str, param_shapes) -> dict:
  """The all-reduced arrays that carry the gradients, found by shape: one per parameter.

  Several arrays may share a parameter's shape (BatchNorm's scale, bias and statistics are all
  [C]); the gradient is taken to be the one of fewest bytes. ``bytes_per_param`` is 4.0 for
  gradients summed in float32, 2.0 in bfloat16; parameters with no array of their shape in any
  all-reduce are counted in ``unmatched_params`` (and left out of ``bytes_per_param``).
  """
  reduced = {}  # dims -> bytes per element of each all-reduced array of those dims.
  for shape_text, kind, _ in _COLLECTIVE.findall(hlo_text):
    if kind == 'all-reduce':
      for item, dims in _arrays(shape_text):
        reduced.setdefault(dims, []).append(item)
  for items in reduced.values():
    items.sort(reverse=True)
  total = matched = unmatched = 0
  for dims in param_shapes:
    count = math.prod(dims)
    if reduced.get(dims):
      total += count * reduced[dims].pop()
      matched += count
    else:
      unmatched += count
  return {'bytes': total, 'bytes_per_param': total / matched if matched else None,
          'unmatched_params': unmatched}


def _abstract(tree, sharding):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _batch(plan, size, image_shape, sharding, mask=False):
  """Abstract batches as the plan's data gives them: float32 images, or (IMAGENET datasets)
  uint8 images with a float32 RGB offset per image."""
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  if not plan.dataset.in_memory:
    batch = {'image': spec((size, *image_shape), jnp.uint8),
             'image_offset': spec((size, image_shape[-1]), jnp.float32)}
  else:
    batch = {'image': spec((size, *image_shape), jnp.float32)}
  batch['label'] = spec((size,), jnp.int32)
  if mask:
    batch['mask'] = jax.ShapeDtypeStruct((size,), jnp.bool_, sharding=sharding)
  return batch


def _compile(jitted, *args, chip: Chip, steps: int, images_per_step: int,
             param_shapes=None) -> dict:
  """Compiles ``jitted`` for ``args``; its memory, cost, collectives and roofline per chip, and
  with ``param_shapes`` the all-reduce of the gradients (``gradient_allreduce``)."""
  start = time.perf_counter()
  try:
    compiled = jitted.lower(*args).compile()
  except Exception as error:  # pylint: disable=broad-except
    if 'RESOURCE_EXHAUSTED' not in str(error):
      raise
    return {'fits': False, 'compile_error': str(error).splitlines()[0]}
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  hbm = {'arguments': memory.argument_size_in_bytes, 'outputs': memory.output_size_in_bytes,
         'donated': memory.alias_size_in_bytes, 'temporaries': memory.temp_size_in_bytes,
         'code': memory.generated_code_size_in_bytes}
  hbm['total'] = (hbm['arguments'] + hbm['outputs'] - hbm['donated'] + hbm['temporaries']
                  + hbm['code'])
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops, bytes_accessed = float(cost['flops']), float(cost['bytes accessed'])
  compute_s, memory_s = flops / chip.peak_bf16_flops, bytes_accessed / chip.hbm_bytes_per_s
  step_s = max(compute_s, memory_s) / steps
  hlo_text = compiled.as_text()
  result = {'fits': hbm['total'] <= chip.hbm_bytes, 'compile_s': compile_s, 'hbm_bytes': hbm,
            'flops': flops, 'bytes_accessed': bytes_accessed,
            'collectives': collectives(hlo_text),
            'estimate': {'compute_s': compute_s / steps, 'memory_s': memory_s / steps,
                         'step_s': step_s,
                         'bound': 'compute' if compute_s >= memory_s else 'memory',
                         'images_per_s': images_per_step / step_s}}
  if param_shapes is not None:
    result['gradient_allreduce'] = gradient_allreduce(hlo_text, param_shapes)
  return result


def fit_batches(config, chips: int) -> list[str]:
  """Raises the global batches to the smallest that ``chips`` chips can run; what changed.

  A config's batches are written for a few devices (ImageNet's 256 in groups of 32 for 8 GPUs);
  a slice needs every chip to hold whole BatchNorm groups and an equal share of the eval batch.
  """
  train_unit = chips * max(config.model.bn_group_size, 1)
  notes = []
  for field, unit in (('batch_size', train_unit), ('eval_batch_size', chips)):
    fitted = -(-config[field] // unit) * unit
    if fitted != config[field]:
      notes.append(f'{field}={config[field]} does not split into {chips} chips'
                   + (f' x groups of {config.model.bn_group_size}' if unit == train_unit
                      and config.model.bn_group_size else '')
                   + f': planned with {field}={fitted}; pass --config.{field}={fitted} to main.py '
                   'too' + (' (the learning rate scales with batch_size / lr_reference_batch).'
                            if field == 'batch_size' else '.'))
      config[field] = fitted
  return notes


def resolve(config, devices) -> run_plan.RunPlan:
  """The run's plan on the slice's ``devices``, from the registry's facts (no TensorFlow)."""
  return run_plan.resolve(config, devices=len(devices),
                          processes=len({d.process_index for d in devices}), facts=registry.get)


def plan(config, topology: str, parts=('train', 'eval')) -> dict:
  """Compiles the train call (``steps_per_call`` steps) and/or the eval step for ``topology``.

  Batches that the slice cannot split are raised first (``fit_batches``; see ``notes``).
  """
  chip = CHIPS.get(topology.split(':')[0])
  devices = topology_devices(topology)
  notes = fit_batches(config, len(devices))
  if config.dataset.device_resident:
    raise PlanError('The plan compiles the tf.data input path; add '
                    '--config.dataset.device_resident=False.')
  run = resolve(config, devices)
  image_shape = run.image_shape
  # The per-pixel mean's values need the data; a stand-in of its shape compiles the same steps.
  correction = (np.full(image_shape, 0.5, np.float32)
                if config.dataset.imagenet_per_pixel_mean else None)
  program = train.build_program(run, devices=devices, image_correction=correction)
  state = _abstract(jax.eval_shape(program.init, jax.random.key(0)), program.replicated)
  steps = config.steps_per_call
  batches = tuple(_batch(run, config.batch_size, image_shape, program.batch_sharding)
                  for _ in range(steps))
  eval_batch = _batch(run, config.eval_batch_size, run.eval_image_shape, program.batch_sharding,
                      mask=True)
  param_shapes = [leaf.shape for leaf in jax.tree.leaves(state.params)]
  if models.stacked_stages(state.params):
    notes.append("The net's deep stages run as scans (model.scan_blocks): XLA's cost analysis "
                 "counts a loop's body once, so the FLOPs, bytes and step estimate below are "
                 'too low (memory is not); --config.model.scan_blocks=False counts every block '
                 'and compiles longer.')
  calls = {
      'train': lambda: _compile(program.train_fn, state, batches, chip=chip, steps=steps,
                                images_per_step=config.batch_size, param_shapes=param_shapes),
      'eval': lambda: _compile(program.eval_fn, state.variables, eval_batch, chip=chip, steps=1,
                               images_per_step=config.eval_batch_size)}
  return {
      'topology': topology, 'device_kind': devices[0].device_kind, 'chips': len(devices),
      'processes': len({d.process_index for d in devices}), 'model': config.model.name,
      'dtype': config.model.dtype, 'bn_group_size': config.model.bn_group_size,
      'gradient_allreduce_dtype': config.gradient_allreduce_dtype,
      'params': sum(math.prod(shape) for shape in param_shapes),
      'batch_size': config.batch_size, 'per_chip_batch': config.batch_size // len(devices),
      'steps_per_call': steps, 'chip': dataclasses.asdict(chip), 'notes': notes,
      'run_plan': run.to_dict(),
      **{part: calls[part]() for part in parts}}


def _gb(n):
  return f'{n / 1e9:.2f} GB'


def _gradient_lines(reduce: dict | None, params: int) -> list[str]:
  if reduce is None:
    return []
  per_param = reduce['bytes_per_param']
  line = (f"  gradient all-reduce: {reduce['bytes'] / 1e6:.2f} MB for {params:,} parameters, "
          + (f'{per_param:.2f} bytes per parameter' if per_param else 'not found'))
  if reduce['unmatched_params']:
    line += f" ({reduce['unmatched_params']:,} parameters without an all-reduced array)"
  return [line]


def report(result: dict) -> str:
  """The plan as text, ending with one line: 'Planned resnet50 on v5e:4x4: train fits (9.10 GB
  of 16.00 GB per chip), ~N images/s at peak; eval fits (...).'"""
  chip, summary = result['chip'], []
  lines = [(f"{result['model']} ({result['dtype']}, bn_group_size={result['bn_group_size']}, "
            f"gradients all-reduced in {result['gradient_allreduce_dtype']}) on "
            f"{result['topology']}: {result['chips']} x {result['device_kind']} over "
            f"{result['processes']} processes (hosts); global batch {result['batch_size']} "
            f"({result['per_chip_batch']} per chip), {result['steps_per_call']} step(s) per call."),
           *result['notes']]
  for part in ('train', 'eval'):
    r = result.get(part)
    if r is None:
      continue
    if 'compile_error' in r:
      lines.append(f"{part}: does not fit: {r['compile_error']}")
      summary.append(f'{part} does not fit')
      continue
    hbm, est = r['hbm_bytes'], r['estimate']
    summary.append(f"{part} {'fits' if r['fits'] else 'DOES NOT FIT'} ({_gb(hbm['total'])} of "
                   f"{_gb(chip['hbm_bytes'])} per chip)"
                   + (f", ~{est['images_per_s']:,.0f} images/s at peak" if part == 'train' else ''))
    lines += [
        f"{part}: compiled in {r['compile_s']:.1f} s",
        (f"  HBM per chip: {_gb(hbm['total'])} of {_gb(chip['hbm_bytes'])} "
         f"({'fits' if r['fits'] else 'DOES NOT FIT'}): arguments {_gb(hbm['arguments'])}, "
         f"outputs {_gb(hbm['outputs'])} ({_gb(hbm['donated'])} of them in donated buffers), "
         f"temporaries {_gb(hbm['temporaries'])}, code {_gb(hbm['code'])}"),
        (f"  per chip per call: {r['flops'] / 1e12:.3f} TFLOP, {_gb(r['bytes_accessed'])} "
         'accessed (XLA cost analysis)'),
        '  collectives per call: ' + (', '.join(
            f"{kind} x{c['count']} ({c['bytes'] / 1e6:.1f} MB)"
            for kind, c in sorted(r['collectives'].items())) or 'none'),
        *_gradient_lines(r.get('gradient_allreduce'), result['params']),
        (f"  ESTIMATE (roofline at peak {chip['peak_bf16_flops'] / 1e12:.0f} TFLOP/s, "
         f"{chip['hbm_bytes_per_s'] / 1e9:.0f} GB/s; no collective latency, no input): "
         f"{est['step_s'] * 1e3:.1f} ms per step ({est['bound']}-bound), "
         f"{est['images_per_s']:,.0f} images/s")]
  lines.append(f"Planned {result['model']} on {result['topology']}: {'; '.join(summary)}.")
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    result = plan(FLAGS.config, FLAGS.topology, parts=FLAGS.parts)
  except (PlanError, errors.ConfigError) as error:
    sys.exit(str(error))
  print(report(result))
  if FLAGS.json_out:
    with open(FLAGS.json_out, 'w') as f:
      json.dump(result, f, indent=2)
  if not all(result[part]['fits'] for part in FLAGS.parts):
    sys.exit(f'Does not fit in the {result["device_kind"]} HBM of '
             f'{_gb(result["chip"]["hbm_bytes"])} per chip: lower batch_size, use more chips '
             'or a chip with more HBM.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
