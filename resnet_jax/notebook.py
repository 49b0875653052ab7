"""A training run opened in a notebook: load, predict, evaluate, plot its curves, export.

    import resnet_jax
    run = resnet_jax.load_run('/tmp/resnet_jax/quickstart')
    run.evaluate()  # {'loss', 'error_top1', 'error_top5'}: what training recorded, exactly.
    run.export('resnet20.msgpack')  # And resnet20.stablehlo: docs/serving.md.

``load_run`` restores only ``{'params', 'batch_stats'}`` of a checkpoint (no optimizer state) onto
this process's devices, whatever topology trained the run: the trained weights, or with
``weights='ema'`` their moving average (``config.ema``), which ``evaluate``, ``predict`` and
``export`` then use. Evaluation runs the training loop's own
jitted eval step over the same padded, masked batches, so on the same devices it reproduces the
recorded numbers bit for bit. Everything runs in this process on its local devices.
"""

import dataclasses
import functools
import importlib
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resnet_jax import (
  checkpointing,
  console,
  ema,
  errors,
  eval_sets,
  events,
  exports,
  inference_record,
  library_logs,
  models,
  run_plan,
  workdirs,
)
from resnet_jax.evaluation import loop as eval_loop
from resnet_jax.predictor import ExportedModel, Predictor

# The config fields that shape the network: a config given to ``load_run`` must agree on them.
MODEL_FIELDS = ('model', 'dataset.name', 'dataset.image_size')


def _datasets():
  """The tfds input path, imported on first use (it imports TensorFlow)."""
  return importlib.import_module('resnet_jax.data.datasets')


@dataclasses.dataclass(frozen=True, eq=False)
class Run(Predictor):
  """One checkpoint of a run: its config, plan, model and variables ``{'params',
  'batch_stats'}`` (``weights``: 'raw', the trained ones, or 'ema', their moving average); the
  plan is the run's own (``plan.json``), for this one process. ``recorded``: the inference
  record the run wrote when it started (None for a run from before the record, whose
  ``inference`` comes from its data)."""
  workdir: str
  config: ml_collections.ConfigDict
  plan: run_plan.RunPlan
  step: int
  recorded: inference_record.InferenceRecord | None
  weights: str = 'raw'
  _eval_fns: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

  @functools.cached_property
  def data(self):
    """The run's dataset, opened for this process (``data.datasets.open_dataset``)."""
    return _datasets().open_dataset(self.plan)

  @functools.cached_property
  def inference(self) -> inference_record.InferenceRecord:
    """The preprocessing constants, label names, image size, net and model config; recorded in
    the workdir, else computed from the data."""
    return self.recorded or self.data.inference_record()

  @property
  def eval_batch_size(self) -> int:
    return self.config.eval_batch_size

  def curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{tag: (steps, values)}`` of every scalar in the TensorBoard events, e.g. 'train_loss'."""
    return events.read_scalars(self.workdir)

  def results(self) -> list[dict]:
    """Every evaluation of the run (``results.jsonl``): its step, seconds since the launch that
    made it, and every metric of every evaluation set, e.g. 'eval_error_top1'."""
    return events.read_results(self.workdir)

  def examples(self, count: int, split: str | None = None):
    """The first ``count`` raw (uint8 images, int labels) of a split (default: the eval split).

    Images are one array [N, h, w, C] when they share a shape (digits, cifar10), else a list.
    """
    tfds = importlib.import_module('tensorflow_datasets')
    spec, builder = self.plan.dataset, self.data.builder
    records = builder.as_dataset(split=split or self.config.dataset.eval_split,
                                 shuffle_files=False,
                                 read_config=tfds.ReadConfig(try_autocache=False)).take(count)
    images, labels = zip(*((example['image'], example[spec.label_feature])
                           for example in tfds.as_numpy(records)))
    same_shape = len({image.shape for image in images}) == 1
    return (np.stack(images) if same_shape else list(images)), np.array(labels)

  def evaluate(self, split: str | None = None, dataset: str | None = None) -> dict[str, float]:
    """``{'loss', 'error_top1', 'error_top5'}`` on a tfds split (default: the eval split) of
    ``dataset`` (default: the run's; another of its label space, as ``config.extra_evals``).

    The training loop's evaluation: the same batches of ``config.eval_batch_size``, padding
    masked out, the same metrics and jitted step.
    """
    placement, data, eval_set = self._placement(), self.data, self.plan.eval_sets[0]
    if placement.num_devices not in self._eval_fns:
      self._eval_fns[placement.num_devices] = eval_loop.jit_eval_step(
          self.model, placement.mesh, data.mean_correction())
    if split is not None or dataset is not None:  # Resolved as an entry of extra_evals.
      config = self.config.copy_and_resolve_references()
      config.extra_evals = (f'set={dataset or config.dataset.name}:'
                            f'{split or config.dataset.eval_split}',)
      plan = _local(_datasets().plan_for(config, training=False))
      data, eval_set = _datasets().open_dataset(plan), plan.eval_sets[-1]
    metrics = eval_loop.evaluate(self._eval_fns[placement.num_devices], placement.variables,
                                 data.eval_split(eval_set), placement.batch_sharding)
    return {name.removeprefix('eval_'): value for name, value in metrics.items()}


# --------------------------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------------------------


def _what_is_in(directory) -> str:
  """One sentence naming the runs in ``directory``, or else what it holds."""
  if not directory.is_dir():
    return f'{directory} does not exist either.'
  names = sorted(child.name for child in directory.iterdir())
  runs = [n for n in names if checkpointing.has_checkpoints(directory / n)]
  if runs:
    return f'Runs with checkpoints in {directory}: {", ".join(runs)}.'
  shown = ', '.join(names[:10]) + (f' and {len(names) - 10} more' if len(names) > 10 else '')
  return f'{directory} holds no run with checkpoints; it holds: {shown or "nothing"}.'


def _check_is_run(workdir: str) -> None:
  workdirs.check_reachable(workdir)
  path = workdirs.path(workdir)
  if not path.is_dir():
    raise errors.CheckpointError(f'No run at {workdir!r}: the directory does not exist. '
                          + _what_is_in(path.parent))
  if not checkpointing.has_checkpoints(path):
    raise errors.CheckpointError(f'{workdir!r} has no checkpoints/ directory, so no checkpoint. '
                          + _what_is_in(path))
  if not (path / 'config.json').exists():
    raise errors.CheckpointError(f'{workdir!r} has checkpoints but no config.json, so the model '
                                 'they belong to is unknown.')


def _check_same_model(saved, config, workdir: str) -> None:
  changed = workdirs.changed_fields(saved, config, MODEL_FIELDS)
  if changed:
    raise errors.ConfigError(
        f'The config given for {workdir!r} describes another network (the run\'s -> the '
        'given: ' + '; '.join(changed) + '). Leave the config out to use the one saved with '
        'the run.')


def _mismatch(expected, actual) -> str | None:
  """How the shapes of ``actual`` differ from those of ``expected`` (pytrees), if they do."""
  want = flax.traverse_util.flatten_dict(expected, sep='/')
  got = flax.traverse_util.flatten_dict(actual, sep='/')
  problems = ([f'{k} missing' for k in sorted(want.keys() - got.keys())]
              + [f'{k} unexpected' for k in sorted(got.keys() - want.keys())]
              + [f'{k} has shape {tuple(np.shape(got[k]))}, the model {tuple(want[k].shape)}'
                 for k in sorted(want.keys() & got.keys())
                 if tuple(np.shape(got[k])) != tuple(want[k].shape)])
  if not problems:
    return None
  more = f' and {len(problems) - 3} more' if len(problems) > 3 else ''
  return '; '.join(problems[:3]) + more


def _abstract_variables(model: nn.Module, variables) -> Any:
  """The shapes ``model`` gives its variables, for the input channels of ``variables``."""
  params = variables['params']
  channels = np.shape(params.get('stem_conv', params.get('stem_conv1'))['kernel'])[2]
  # Parameter shapes do not depend on the image size (global average pooling).
  image = jax.ShapeDtypeStruct((1, 32, 32, channels), jnp.float32)
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), image)


def _in_layout_of(model: nn.Module, variables) -> tuple[Any, str | None]:
  """``variables`` laid out as ``model`` has them (``models.layouts``), and what else does not
  fit it (None if nothing)."""
  abstract = _abstract_variables(model, variables)
  variables = models.to_layout(variables, models.stacked_stages(abstract))
  return variables, _mismatch(abstract, variables)


def _num_classes(variables) -> int:
  return int(np.shape(variables['params']['fc']['bias'])[0])


def _local(plan: run_plan.RunPlan) -> run_plan.RunPlan:
  """``plan`` for this process alone: every eval batch is this process's."""
  return dataclasses.replace(plan, processes=1, devices=1)


def load_run(workdir: str, step: int | None = None, *,
             config: ml_collections.ConfigDict | None = None,
             data_dir: str | None = None, weights: str = 'raw') -> Run:
  """Opens the checkpoint of ``step`` (default: the latest) of the run in ``workdir``.

  Restores only params and batch_stats, onto this process's first local device: the trained
  ones (``weights='raw'``) or their moving average (``'ema'``; a ``CheckpointError`` where the
  run kept none). The run's plan
  (``plan.json``) gives its numbers; ``config`` replaces the saved ``workdir/config.json`` and
  must describe the same network, and ``data_dir`` reads the dataset from another tfds
  data_dir (either resolves the plan again). Raises ``CheckpointError`` naming what exists when
  ``workdir``, its checkpoints or ``step`` do not.
  """
  library_logs.use_cpu_without_accelerators()
  workdir = os.fspath(workdir)
  _check_is_run(workdir)
  saved = workdirs.load_config(workdir)
  plan = run_plan.load(workdir) if config is None and data_dir is None else None
  if config is None:
    config = saved
  else:
    _check_same_model(saved, config, workdir)
  if data_dir is not None:
    config = config.copy_and_resolve_references()
    config.dataset.data_dir = data_dir
  if plan is None:  # Asked for, or a run that wrote no plan.
    plan = _datasets().plan_for(config, training=False)
  variables, step = checkpointing.restore_variables(workdir, step, weights=weights)
  model = models.from_config(config.model, _num_classes(variables))
  variables, problem = _in_layout_of(model, variables)
  if problem:
    raise errors.CheckpointError(f'The checkpoint at step {step} of {workdir!r} does not fit the '
                                 f'model of its config: {problem}.')
  return Run(workdir=workdir, config=plan.config, plan=_local(plan), model=model,
             variables=variables, step=step, recorded=inference_record.load(workdir),
             weights=weights)


def _read_export(path: str) -> tuple[dict, inference_record.InferenceRecord | None]:
  """``exports.read``, its failures as one ``CheckpointError`` naming the file."""
  if not os.path.isfile(path):
    raise errors.CheckpointError(f'No export at {path!r}: the file does not exist. '
                                 + _what_is_in(workdirs.path(path).parent))
  try:
    return exports.read(path)
  except Exception as error:  # pylint: disable=broad-except  (msgpack raises several kinds)
    raise errors.CheckpointError(
        f'{path!r} cannot be read as an export that Run.export writes ({type(error).__name__}: '
        f'{error}). Export the run again: resnet_jax.load_run(workdir).export(path).') from None


def load_exported(path: str, model_or_config=None) -> tuple[nn.Module, dict]:
  """``(model, variables)`` from a file that ``Predictor.export`` wrote.

  ``model_or_config``: the Flax model (e.g. ``run.model``), or a run's config, from which the
  model is built with the file's number of classes; default the net the file records (a file
  written before exports held their inference record needs one). Raises ``ValueError`` if they
  do not fit.
  """
  model, variables, _ = _load_export(path, model_or_config)
  return model, variables


def _load_export(path: str, model_or_config=None):
  """``load_exported``, and the file's inference record (None in a file of variables alone)."""
  variables, record = _read_export(path)
  model = model_or_config
  if model is None and record is None:
    raise ValueError(f'{path} holds the variables alone (an export from before exports held '
                     'the net\'s config): pass the model or the run\'s config, or export the '
                     'run again.')
  if not isinstance(model, nn.Module):
    model_config = record.model_config if model is None else model_or_config.model
    model = models.from_config(model_config, _num_classes(variables))
  variables, problem = _in_layout_of(model, variables)
  if problem:
    raise ValueError(f'{path} does not fit the model: {problem}.')
  return model, jax.device_put(variables), record


def load_predictor(path: str, weights: str = 'raw') -> Predictor:
  """The net of a run's workdir (``load_run``: its latest checkpoint, ``weights`` 'raw' or
  'ema') or of an export (``Predictor.export``; it holds the weights it was exported with),
  ready to predict without the training data or config."""
  library_logs.use_cpu_without_accelerators()
  path = os.fspath(path)
  if workdirs.path(path).is_dir():
    return load_run(path, weights=weights)
  model, variables, record = _load_export(path)
  exported = ExportedModel(model=model, variables=variables, path=path, inference=record)
  if exported.weights != weights:
    raise ValueError(f'{path} holds the {exported.weights!r} weights, not {weights!r}: export '
                     f"them with load_run(workdir, weights={weights!r}).export(path).")
  return exported


def evaluate_latest(workdir: str, config: ml_collections.ConfigDict | None = None) -> dict:
  """``main.py --mode=eval``: evaluates the latest checkpoint on the eval split and on each set
  of ``config.extra_evals``, printing one line for each, then the same for the weights' moving
  average where the run kept one (``config.ema``); returns the eval split's metrics of the
  weights."""
  library_logs.quiet()
  run = load_run(workdir, config=config)
  metrics = _evaluate_every_set(run, workdir)
  if ema.from_config(run.config) is not None:
    _evaluate_every_set(load_run(workdir, run.step, config=config, weights='ema'), workdir)
  return metrics


def _evaluate_every_set(run: Run, workdir: str) -> dict:
  """Prints the evaluation of ``run`` on each of its sets; returns the eval split's metrics."""
  main, *extras = run.plan.eval_sets
  metrics = _print_evaluation(run, workdir, main, run.evaluate())
  for extra in extras:
    _print_evaluation(run, workdir, extra, run.evaluate(extra.split, extra.dataset))
  return metrics


def _print_evaluation(run: Run, workdir: str, eval_set: run_plan.EvalSet, metrics: dict) -> dict:
  """'Evaluated step 368 of WORKDIR on 1 device: test error 0.67 % (2/297), top-5 0.00 %,
  loss 0.01663'; an extra set is named with its dataset and split, the weights' average with
  '(EMA)'."""
  name = eval_set.name if eval_set.prefix == eval_sets.EVAL_PREFIX else (
      f'{eval_set.name} ({eval_set.dataset}:{eval_set.split})')
  if run.weights == 'ema':
    name += ' (EMA)'
  devices = run.num_devices
  errors_text = console.errors(name, metrics['error_top1'], metrics['error_top5'],
                               eval_set.num_examples)
  print(f'Evaluated step {run.step} of {workdir} on {devices} device{"" if devices == 1 else "s"}'
        f': {errors_text}, loss {metrics["loss"]:.4g}', flush=True)
  return metrics
