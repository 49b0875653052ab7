"""Timers of the PyTorch twin (benchmarks/torch_resnet.py): train step and forward pass in
every configuration asked for (channels_last, torch.compile; bf16 autocast with --dtype).

    python -m benchmarks.harness --parts=step,forward,torch \\
        --torch_variants=eager,channels_last,compile,compile_cl
"""

import contextlib

from benchmarks.settings import Settings, bench_config, synthetic_batch
from benchmarks.timing import Timer
from resnet_jax import models

TORCH_VARIANTS = ('eager', 'channels_last', 'compile', 'compile_cl')


def torch_variant(torch, net, name):
  """(module to call, input memory format) of one configuration of ``net``."""
  channels_last = name in ('channels_last', 'compile_cl')
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  net = net.to(memory_format=fmt)
  return (torch.compile(net) if name.startswith('compile') else net), fmt


def torch_timers(settings: Settings, variants) -> list[Timer]:
  """Train step (SGD, momentum, weight decay, as the project) and forward of every variant."""
  import torch  # pylint: disable=import-outside-toplevel

  from benchmarks import torch_resnet  # pylint: disable=import-outside-toplevel
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  sync = torch.cuda.synchronize if device == 'cuda' else lambda: None
  bf16 = settings.dtype == 'bfloat16'
  autocast = lambda: (torch.autocast(device, dtype=torch.bfloat16) if bf16
                      else contextlib.nullcontext())
  batch = synthetic_batch(settings)
  labels = torch.from_numpy(batch['label']).long().to(device)
  flax_model = models.from_config(bench_config(settings).model, settings.num_classes)
  timers = []
  for name in variants:
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
    timers += [Timer('train_step', impl, train_step, sync, settings.batch_size),
               Timer('forward', impl, forward, sync, settings.batch_size)]
  return timers
