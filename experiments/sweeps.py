"""The paper's experiments as named sweeps: lists of (run name, config, overrides).

A run trains ``python main.py --config=<config> --workdir=<root>/<run name>`` with every override
appended as ``--config.<key>=<value>``; ``experiments.run`` runs or prints them. A sweep trains
each of its nets once per seed (``with_seeds``): run ``<net>/seed<k>`` with ``seed=k``.
"""

import os
from typing import Any, NamedTuple

from configs import recipes

# The layout of a sweep's root: the sweeps run into it, and per run the evaluation results.
SWEEPS_FILE = 'sweeps.json'


def eval_result_path(workdir: str, mode: str) -> str:
  """Where ``tools.evaluate`` writes the result of one evaluation mode of a run."""
  return os.path.join(workdir, f'eval_{mode}.json')


class Run(NamedTuple):
  name: str  # The run's directory under the sweep's root.
  config: str  # A config file with its argument, e.g. 'configs/cifar10.py:resnet56'.
  overrides: dict[str, Any]  # Dotted config fields, e.g. {'model.shortcut': 'A'}.


# The digits depth study: configs/digits.py (16 epochs of 23 steps, lr /10 at epochs 8 and 12)
# with the paper's ResNet-110 warm-up (lr 0.01 for the first 2 epochs) for every net, so the
# 56-layer ResNet starts as smoothly as the 20-layer one.
DIGITS_DEPTH_OVERRIDES = {'optimizer.warmup_steps': 46}


def _cifar(models, dataset='cifar10', **overrides):
  return [Run(m, f'configs/{dataset}.py:{m}', dict(overrides)) for m in models]


# Figure 6's nets: plain and residual at 20 to 56 layers, and ResNet-110.
CIFAR_DEPTH_STUDY = ['plain20', 'plain32', 'plain44', 'plain56', 'resnet20', 'resnet32',
                     'resnet44', 'resnet56', 'resnet110']


def _digits(models):
  return [Run(m, f'configs/digits.py:{m}', dict(DIGITS_DEPTH_OVERRIDES)) for m in models]


# "Identity Mappings", Tables 3 and 4: the original unit against the pre-activation unit at 110
# (basic blocks), 164 and 1001 layers (bottleneck blocks).
PREACT_STUDY = ['resnet110', 'preact_resnet110', 'resnet164', 'preact_resnet164', 'resnet1001',
                'preact_resnet1001']


def _recipe_ablation(models):
  """Each net with the paper's digits recipe, the modern one (``recipes.DIGITS_MODERN``), and
  the modern one without each of its parts in turn: '<net>_paper', '<net>_modern',
  '<net>_modern-<part>'."""
  runs = []
  for model in models:
    config = f'configs/digits.py:{model}'
    runs += [Run(f'{model}_paper', config, {}),
             Run(f'{model}_modern', config, recipes.fields('digits_modern',
                                                            recipes.DIGITS_MODERN))]
    runs += [Run(f'{model}_modern-{part}', config,
                 recipes.fields('digits_modern', recipes.DIGITS_MODERN, without=(part,)))
             for part in recipes.DIGITS_MODERN]
  return runs


SWEEPS = {
    # Figure 6 and Table 6: plain vs residual on CIFAR-10 with the paper's recipe.
    'depth_study:cifar10': _cifar(CIFAR_DEPTH_STUDY),
    # The same nets and recipe on CIFAR-100 (not in the paper).
    'depth_study:cifar100': _cifar(CIFAR_DEPTH_STUDY, 'cifar100'),
    # The same study on the bundled offline dataset, sized for a 2-core CPU.
    'depth_study:digits': _digits(['plain20', 'plain56', 'resnet20', 'resnet56']),
    # Table 2 and Figure 4: plain-18/34 vs ResNet-18/34 with zero-padded identity shortcuts (A).
    'imagenet_plain_vs_residual': [
        Run('plain18', 'configs/imagenet.py:plain18', {}),
        Run('plain34', 'configs/imagenet.py:plain34', {}),
        Run('resnet18', 'configs/imagenet.py:resnet18,A', {}),
        Run('resnet34', 'configs/imagenet.py:resnet34,A', {}),
    ],
    # Table 3: ResNet-34 with shortcut options A, B and C.
    'shortcuts': [Run(f'resnet34_{o}', f'configs/imagenet.py:resnet34,{o}', {}) for o in 'ABC'],
    # Table 3 and 4: the bottleneck nets.
    'imagenet_deep': [Run(f'resnet{d}', f'configs/imagenet.py:resnet{d}', {})
                      for d in (50, 101, 152)],
    # Table 6: ResNet-110 vs the overfitting ResNet-1202.
    'cifar_1202': _cifar(['resnet110', 'resnet1202']),
    # "Identity Mappings": original vs pre-activation units on CIFAR-10 with its recipe.
    'preact_study:cifar10': _cifar(PREACT_STUDY),
    # The same comparison on the bundled digits (docs/preact_study_digits.md).
    'preact_study:digits': _digits(PREACT_STUDY),
    # Which parts of the modern recipe matter, for a plain and a residual net, on the bundled
    # digits (docs/recipe_ablation_digits.md).
    'recipe_ablation:digits': _recipe_ablation(['plain20', 'resnet20']),
}


# Seeds per net unless --seeds says otherwise. The paper gives CIFAR-10's ResNet-110 as
# best (mean ± std) over 5 runs (Table 6) and each ImageNet net as one run; the digits study is
# sized for 3 seeds on a 2-core CPU.
DEFAULT_SEEDS = {'depth_study:cifar10': 5, 'depth_study:cifar100': 5, 'depth_study:digits': 3,
                 'imagenet_plain_vs_residual': 1, 'shortcuts': 1, 'imagenet_deep': 1,
                 'cifar_1202': 5, 'preact_study:cifar10': 5, 'preact_study:digits': 3,
                 'recipe_ablation:digits': 2}


def seed_run_name(net: str, seed: int) -> str:
  """The run of ``net`` with ``seed``: its workdir is ``<root>/<net>/seed<seed>``."""
  return f'{net}/seed{seed}'


def with_seeds(runs: list[Run], seeds: int) -> list[Run]:
  """Every run once per seed 0 .. seeds-1 (``seed_run_name``, override seed=k), seed by seed.

  Seed 0 of every net comes first, so a sweep interrupted early still covers every net.
  """
  if seeds < 1:
    raise ValueError(f'The number of seeds must be at least 1, not {seeds}.')
  return [run._replace(name=seed_run_name(run.name, seed), overrides={**run.overrides,
                                                                       'seed': seed})
          for seed in range(seeds) for run in runs]


def get_sweep(name: str) -> list[Run]:
  """The nets of sweep ``name``, one run each; raises ValueError listing the valid names."""
  if name not in SWEEPS:
    raise ValueError(f'Unknown sweep {name!r}. Valid sweeps: {", ".join(SWEEPS)}.')
  return list(SWEEPS[name])
