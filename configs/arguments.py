"""The argument after a config file's colon, ``MODEL[,OPTION...]`` (``DATASET[,OPTION...]`` for
the transfer config), read the same way by every config: ``configs/imagenet.py:resnet34,C``."""

from resnet_jax import models


def family_models(family: str) -> tuple[str, ...]:
  """The model zoo's names of one family, 'cifar' or 'imagenet'."""
  return tuple(n for n in models.MODEL_NAMES if models.model_family(n) == family)


def parse(arg: str, *, file: str, model_names, options=None, exclusive=(), what: str = 'net'):
  """``(model, [option functions])`` from ``arg``; options apply to a config in the order given.

  ``options`` maps each option name to a function of the config; every name of a group in
  ``exclusive`` (e.g. the shortcut options A, B, C) may be given at most once in all. Anything
  else is an error that lists what ``file`` accepts. ``what`` the first name picks (a 'net', or
  a 'dataset' where ``model_names`` lists datasets).
  """
  options = options or {}
  model, *given = arg.split(',')
  if model not in model_names:
    raise ValueError(f'{file}:{arg}: {model!r} is not a {what} of this config; use one of '
                     f'{", ".join(model_names)}.')
  unknown = [o for o in given if o not in options]
  clashing = [group for group in exclusive if sum(o in group for o in given) > 1]
  if unknown or clashing:
    accepted = ', '.join(options) or 'none'
    raise ValueError(f'{file}:{arg}: options {given} not understood; options are {accepted}'
                     + ''.join(f', at most one of {", ".join(g)}' for g in exclusive) + '.')
  return model, [options[o] for o in given]
