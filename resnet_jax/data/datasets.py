"""The two ends of a run's data: the facts a plan is resolved from, and the data opened for it.

``facts(config.dataset)`` gives ``run_plan.resolve`` the ``DatasetSpec`` of any dataset name
(``specs.spec_of``: registry entries, tfds builders' info, image folders), reading metadata only.
``open_dataset(plan, process_index)`` then opens the data once, in the family the plan's dataset
takes: ``small.SmallDataset`` (held in memory, the CIFAR recipe) or ``streamed.StreamedDataset``
(streamed records, the ImageNet recipe). Opening prepares what the project prepares itself (the
bundled digits, an image folder), refuses a dataset that is not prepared, and checks that extra
eval sets share the main dataset's class names.
"""

import functools
from collections.abc import Callable

from resnet_jax import run_plan
from resnet_jax.data import dataset, registry, small, specs, streamed


def facts(dataset_config) -> Callable[[str], registry.DatasetSpec]:
  """``name -> DatasetSpec`` for a config's ``dataset`` section (its data_dir, image size)."""
  return functools.partial(specs.spec_of, dataset=dataset_config)


def open_dataset(plan, process_index: int = 0) -> dataset.Dataset:
  """The data of ``plan`` as process ``process_index`` reads it."""
  family = small.SmallDataset if plan.dataset.in_memory else streamed.StreamedDataset
  return family(plan, process_index)


def plan_for(config, *, processes: int = 1, devices: int | None = None,
             recorded_shards: int | None = None, training: bool = True) -> 'run_plan.RunPlan':
  """``run_plan.resolve``'s plan of ``config`` on ``devices`` devices (default: one per process)
  over ``processes`` processes, from the facts of its data (``training=False``: the plan of an
  evaluation; ``recorded_shards``: those of the checkpoint a run resumes from)."""
  return run_plan.resolve(config, devices=devices or processes, processes=processes,
                          facts=facts(config.dataset), recorded_shards=recorded_shards,
                          training=training)


def open_config(config, *, processes: int = 1, process_index: int = 0,
                training: bool = True) -> dataset.Dataset:
  """The data of ``config`` (``plan_for``) as process ``process_index`` reads it."""
  return open_dataset(plan_for(config, processes=processes, training=training), process_index)
