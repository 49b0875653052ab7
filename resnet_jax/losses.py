"""The training loss against soft targets: softmax cross-entropy or binary cross-entropy.

A run's targets are its labels' one-hot vectors, smoothed towards uniform by ``label_smoothing``
(Szegedy et al. 2016), then mixed by mixup or cutmix where those are on (``mixing``): smoothing
applies to each one-hot before mixing, as timm's ``mixup_target`` and torchvision's references
do. ``Loss`` scores logits against them per example: the softmax cross-entropy, or timm's
``BinaryCrossEntropy`` (Wightman et al. 2021, "ResNet strikes back"): a sigmoid per class, each
target above ``target_threshold`` made 1 and the others 0 where a threshold is set, the classes'
losses averaged (timm's default, ``reduction='mean'`` over batch and classes) or summed
(``sum_classes``, timm's ``--bce-sum``). The batch's mean of it is the loss minimised.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

LOSSES = ('cross_entropy', 'binary_cross_entropy')


@dataclasses.dataclass(frozen=True)
class Loss:
  """The per-example training loss of ``config.loss`` and its options."""
  name: str = 'cross_entropy'
  target_threshold: float | None = None  # binary_cross_entropy: targets > it become 1, else 0.
  sum_classes: bool = False  # binary_cross_entropy: sum the classes' losses, not their mean.

  def __call__(self, logits, targets):
    """Per-example loss, float32 [B], of ``logits`` [B, K] against ``targets`` [B, K]."""
    logits = logits.astype(jnp.float32)
    if self.name == 'cross_entropy':
      return optax.softmax_cross_entropy(logits, targets)
    if self.target_threshold is not None:
      targets = (targets > self.target_threshold).astype(jnp.float32)
    per_class = optax.sigmoid_binary_cross_entropy(logits, targets)
    return per_class.sum(-1) if self.sum_classes else per_class.mean(-1)


def from_config(config) -> Loss:
  return Loss(name=config.loss, target_threshold=config.bce_target_threshold,
              sum_classes=config.bce_sum_classes)


def targets(labels, num_classes: int, label_smoothing: float = 0.0):
  """The one-hot targets [B, ``num_classes``] of ``labels``, smoothed towards uniform: 1 - a + a/K
  on the label and a/K on each other class, a = ``label_smoothing``."""
  return optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)


def problems(config) -> list[str]:
  """What keeps the config's training loss (``loss``, ``bce_*``, ``label_smoothing``) from
  building."""
  found = []
  if config.loss not in LOSSES:
    found.append(f'loss={config.loss!r} is not a loss; use one of '
                 f'{", ".join(map(repr, LOSSES))}.')
  threshold = config.bce_target_threshold
  if (threshold is not None or config.bce_sum_classes) and config.loss != 'binary_cross_entropy':
    found.append('bce_target_threshold and bce_sum_classes are options of '
                 f'loss=binary_cross_entropy, but loss={config.loss!r}: set '
                 '--config.loss=binary_cross_entropy, or leave them at None and False.')
  if threshold is not None and not 0 <= threshold < 1:
    found.append(f'bce_target_threshold={threshold} must be in [0, 1) (timm\'s "ResNet strikes '
                 'back" recipes use 0.2), or None to keep the soft targets.')
  if not 0 <= config.label_smoothing < 1:
    found.append(f'label_smoothing={config.label_smoothing} must be in [0, 1) (0: the plain '
                 'cross-entropy; MLPerf uses 0.1).')
  return found
