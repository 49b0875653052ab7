"""The paper's figures of a sweep's runs: Figure 6 (training curves) and Figure 7 (layer
responses), as PNG files."""

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
from absl import logging  # pylint: disable=wrong-import-position

from experiments.report_runs import depth, family, is_plain, label  # pylint: disable=wrong-import-position
from resnet_jax import checkpointing  # pylint: disable=wrong-import-position


def _ordered(names: list[str], nets: dict) -> list[str]:
  """The nets plain first, each family by depth."""
  return sorted(names, key=lambda n: (not is_plain(nets[n][0]), depth(nets[n][0])))


def _panels(names, nets):
  """[(title, net names)]: plain nets left, ResNets right, pre-activation ResNets beside them
  (only the families present)."""
  ordered = _ordered(names, nets)
  families = [(title, [n for n in ordered if family(nets[n][0]) == kind]) for title, kind in (
      ('plain', 'plain'), ('residual', 'ResNet'), ('pre-activation', 'pre-act ResNet'))]
  return [(title, members) for title, members in families if members]


def _colour(index):
  return plt.get_cmap('tab10')(index % 10)


def _legend(members: list[dict]) -> str:
  """A net's legend entry: its label, and how many seeds its lines are."""
  return label(members[0]) + ('' if len(members) == 1 else f' ({len(members)} seeds)')


def training_curves_figure(names: list[str], nets: dict) -> plt.Figure:
  """Figure 6: training error dashed, test error bold, against iterations; one line per seed."""
  panels = _panels(names, nets)
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False,
                           sharey=True)
  for ax, (title, members) in zip(axes[0], panels):
    for index, name in enumerate(members):
      colour = _colour(index)
      for seed_index, run in enumerate(nets[name]):
        legend = _legend(nets[name]) if seed_index == 0 else None
        train_steps, train_errors = run['scalars']['train_error_top1']
        ax.plot(train_steps, 100 * train_errors, '--', color=colour, linewidth=1)
        if 'eval_error_top1' in run['scalars']:
          test_steps, test_errors = run['scalars']['eval_error_top1']
          ax.plot(test_steps, 100 * test_errors, '-', color=colour, linewidth=2, alpha=0.8,
                  label=legend)
    ax.set_title(f'{title} nets (dashed: training error, bold: test error)', fontsize=10)
    ax.set_xlabel('iterations')
    ax.grid(alpha=0.3)
    ax.legend()
  axes[0][0].set_ylabel('error (%)')
  return fig


def layer_responses_figure(responses: dict[str, list[float]], names: list[str],
                           nets: dict) -> plt.Figure:
  """Figure 7: std of each 3x3 layer's response, in layer order (top) and sorted (bottom).

  ``responses`` holds the stds per run name; every seed of a net is drawn in the net's colour.
  """
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5))
  drawn = [n for n in _ordered(names, nets) if any(r['name'] in responses for r in nets[n])]
  for index, name in enumerate(drawn):
    members = [run for run in nets[name] if run['name'] in responses]
    for seed_index, run in enumerate(members):
      style = {'color': _colour(index), 'linestyle': '--' if is_plain(run) else '-',
               'marker': '.', 'linewidth': 1,
               'label': _legend(members) if seed_index == 0 else None}
      stds = responses[run['name']]
      top.plot(range(1, len(stds) + 1), stds, **style)
      bottom.plot(range(1, len(stds) + 1), sorted(stds, reverse=True), **style)
  top.set_xlabel('layer index (original)')
  bottom.set_xlabel('layer index (sorted by magnitude)')
  for ax in (top, bottom):
    ax.set_ylabel('std')
    ax.grid(alpha=0.3)
  top.legend(fontsize=8, ncol=2)
  return fig


def save(fig: plt.Figure, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def layer_responses(runs: list[dict]) -> dict[str, list[float]]:
  """{run name: response stds} for the runs that have a checkpoint and a readable test split."""
  # pylint: disable=import-outside-toplevel  (TensorFlow and compilation only when needed)
  from resnet_jax import errors
  from resnet_jax.evaluation import layer_responses as analysis
  responses = {}
  for run in runs:
    if not checkpointing.has_checkpoints(run['workdir']):
      continue
    try:
      responses[run['name']] = [std for _, std in
                                analysis.workdir_layer_responses(run['workdir'])]
    except (errors.DatasetNotAvailableError, errors.CheckpointError) as error:
      logging.warning('No layer responses for %s: %s', run['name'], error)
  return responses
