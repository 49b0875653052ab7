"""Where the time goes: every distinct convolution of the model timed alone, in JAX and torch.

    python -m benchmarks.harness --parts=convs
"""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.settings import Settings, bench_config
from benchmarks.timing import time_steps
from resnet_jax import models


def model_convolutions(settings: Settings) -> dict:
  """{(input shape, kernel shape, strides, padding): count} of the model's forward pass."""
  model = models.from_config(bench_config(settings).model, settings.num_classes)
  x = jnp.zeros((settings.batch_size, *settings.image_shape))
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


def bench_convs(settings: Settings) -> list[dict]:
  """Forward, input-gradient and filter-gradient time of each convolution, JAX and torch.

  torch's gradients are timed as forward + backward minus the forward.
  """
  import torch  # pylint: disable=import-outside-toplevel
  results = []
  timed = lambda run, sync: time_steps(run, sync, repeats=settings.repeats,
                                       steps=settings.steps)['step_s']
  for (lhs, rhs, strides, padding), count in model_convolutions(settings).items():
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
