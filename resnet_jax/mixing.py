"""Mixup and cutmix of a training batch, on the devices inside the train step.

As timm's ``Mixup`` in its 'batch' mode and torchvision's references (``RandomMixup``,
``RandomCutmix``): one draw per batch. With probability ``prob`` the batch is mixed, by cutmix
with probability ``switch_prob`` where both are on (else by the one that is on), with one
coefficient lam ~ Beta(alpha, alpha) of the chosen method for the whole batch. Each example is
mixed with its neighbour in the batch rolled by one (torchvision's pairing): mixup blends the two
images lam : 1 - lam (Zhang et al. 2018); cutmix (Yun et al. 2019) pastes the neighbour's pixels
in a box of sides sqrt(1 - lam) times the image's, centred on a uniform pixel and clipped to the
image, and lam becomes the fraction of the image left outside the box. The targets are mixed
alike: lam y + (1 - lam) y_neighbour.

The draws are a function of (seed, step) alone (``step_key``), and the step mixes the global
batch before the devices take their slices: the pairs, the box and lam do not depend on how many
devices there are. Rolling by one (timm flips the batch instead) moves one example across each
device boundary, where a flip would exchange every slice.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from resnet_jax.parallel import sharding

_STREAM = 0xB1E2D  # Folded into the seed's key, so mixing keys differ from the model's.


@dataclasses.dataclass(frozen=True)
class Mixing:
  """``config.mixup``: the Beta parameters (0: off) and the probabilities of each batch."""
  mixup_alpha: float
  cutmix_alpha: float
  prob: float
  switch_prob: float


def from_config(config) -> Mixing | None:
  """The mixing of ``config.mixup``; None where both alphas are 0 (the paper: no mixing)."""
  mix = config.mixup
  if not (mix.mixup_alpha or mix.cutmix_alpha):
    return None
  return Mixing(float(mix.mixup_alpha), float(mix.cutmix_alpha), float(mix.prob),
                float(mix.switch_prob))


def problems(config) -> list[str]:
  """What keeps ``config.mixup`` from giving a mixing."""
  mix, found = config.mixup, []
  if mix.mixup_alpha < 0 or mix.cutmix_alpha < 0:
    found.append(f'mixup.mixup_alpha={mix.mixup_alpha} and mixup.cutmix_alpha='
                 f'{mix.cutmix_alpha} must not be negative (0: off; torchvision\'s recipe uses '
                 '0.2 and 1.0).')
  for field in ('prob', 'switch_prob'):
    if not 0 <= mix[field] <= 1:
      found.append(f'mixup.{field}={mix[field]} is a probability: give one in [0, 1].')
  return found


def step_key(rng, step):
  """The key of step ``step``'s draw, from the run's key ``rng``."""
  return jax.random.fold_in(jax.random.fold_in(rng, _STREAM), step)


class Draw(NamedTuple):
  """One batch's draw: whether it is mixed, lam (1 where not), whether by cutmix, and the box,
  rows [top, bottom) and columns [left, right) (empty unless cutmix mixes)."""
  mixed: jax.Array
  lam: jax.Array
  cutmix: jax.Array
  top: jax.Array
  bottom: jax.Array
  left: jax.Array
  right: jax.Array


def draw(key, mixing: Mixing, height: int, width: int) -> Draw:
  """The draw of a batch of ``height`` x ``width`` images, as the module describes."""
  apply_key, switch_key, lam_key, y_key, x_key = jax.random.split(key, 5)
  applied = jax.random.uniform(apply_key) < mixing.prob
  if mixing.mixup_alpha and mixing.cutmix_alpha:
    cutmix = jax.random.uniform(switch_key) < mixing.switch_prob
  else:
    cutmix = jnp.asarray(mixing.cutmix_alpha > 0)
  alpha = jnp.where(cutmix, mixing.cutmix_alpha, mixing.mixup_alpha)
  lam = jax.random.beta(lam_key, alpha, alpha)
  # torchvision's box: half-sides int(sqrt(1 - lam) / 2 x side) about a uniform centre, clipped.
  centre_y = jax.random.randint(y_key, (), 0, height)
  centre_x = jax.random.randint(x_key, (), 0, width)
  half = 0.5 * jnp.sqrt(1.0 - lam)
  half_h = jnp.floor(half * height).astype(jnp.int32)
  half_w = jnp.floor(half * width).astype(jnp.int32)
  boxed = applied & cutmix
  top = jnp.where(boxed, jnp.maximum(centre_y - half_h, 0), 0)
  bottom = jnp.where(boxed, jnp.minimum(centre_y + half_h, height), 0)
  left = jnp.where(boxed, jnp.maximum(centre_x - half_w, 0), 0)
  right = jnp.where(boxed, jnp.minimum(centre_x + half_w, width), 0)
  box_lam = 1.0 - ((bottom - top) * (right - left)).astype(jnp.float32) / (height * width)
  lam = jnp.where(applied, jnp.where(cutmix, box_lam, lam), 1.0)
  return Draw(applied, lam, boxed, top, bottom, left, right)


def neighbours(x, mesh: jax.sharding.Mesh | None = None):
  """``x`` rolled by one along the batch (axis 0): each example's place holds the one before it,
  the first's the last. With ``mesh``, ``x`` is split along its ``data`` axis: each device
  shifts its slice and takes the last example of the device before it, so one example crosses
  each device boundary (XLA's explicit sharding does not slice a split axis itself)."""
  if mesh is None or mesh.shape[sharding.DATA_AXIS] == 1:
    return jnp.roll(x, 1, axis=0)
  devices = mesh.shape[sharding.DATA_AXIS]

  def shift(local):
    before = jax.lax.ppermute(local[-1:], sharding.DATA_AXIS,
                              [(i, (i + 1) % devices) for i in range(devices)])
    return jnp.concatenate([before, local[:-1]], axis=0)

  spec = P(sharding.DATA_AXIS)
  return jax.shard_map(shift, mesh=mesh, in_specs=spec, out_specs=spec)(x)


def mix(key, mixing: Mixing, images, targets, mesh: jax.sharding.Mesh | None = None):
  """``(images, targets)`` of a batch (images [B, H, W, C], targets [B, K]) mixed by the draw
  of ``key``: each example with the one before it (the first with the last). ``mesh``: the one
  whose ``data`` axis splits the batch, if any (``neighbours``)."""
  d = draw(key, mixing, *images.shape[1:3])
  partner_images, partner_targets = neighbours(images, mesh), neighbours(targets, mesh)
  rows = jnp.arange(images.shape[1])[:, None]
  columns = jnp.arange(images.shape[2])[None, :]
  in_box = (rows >= d.top) & (rows < d.bottom) & (columns >= d.left) & (columns < d.right)
  # Mixup blends by lam; cutmix keeps every pixel outside the box, and unmixed batches all.
  keep = jnp.where(d.cutmix, 1.0, d.lam).astype(images.dtype)
  images = jnp.where(in_box[None, :, :, None], partner_images,
                     keep * images + (1 - keep) * partner_images)
  lam = d.lam.astype(targets.dtype)
  return images, lam * targets + (1 - lam) * partner_targets
