"""ImageNet with the paper's recipe; the per-model files (imagenet_r50.py, ...) call this.

SGD, momentum 0.9, weight decay 1e-4, batch 256, lr 0.1 (scaled linearly with the batch),
divided by 10 at epochs 30, 60 and 80 of 90; scale augmentation [256, 480], random 224 crops and
flips, PCA lighting, mean subtraction; bfloat16 compute with float32 parameters.

    python main.py --config=configs/imagenet_r50.py --workdir=/tmp/resnet_jax/imagenet_r50

BatchNorm statistics come from groups of 32 images (``model.bn_group_size=32``), as in the paper,
where each of 8 GPUs normalised its own 32 of the 256 images. It also suits a pod: statistics of
the whole global batch need small all-reduces across every chip in every BatchNorm layer, forward
and backward, each on the critical path (197 per ResNet-50 step on a v5e:4x4 slice), while groups
within a chip leave only the gradients' all-reduce, which XLA merges into a couple
(``experiments/tpu_plan.py``; benchmarks/RESULTS.md, section 8). Global statistics are one flag
away: ``--config.model.bn_group_size=0``. The group must divide the per-chip batch
(``batch_size`` / number of chips): on more than 8 chips, raise ``batch_size`` with them.

Prepare ``imagenet2012`` with tfds first (the tar files go to ``<data_dir>/downloads/manual``;
see the README).

Expected runtimes in the per-model files are estimates (no GPU figure is measured yet): compute
is 90 epochs x 1.28M images x 3 (forward and backward) x 2 FLOPs per multiply-add at 30% of an
H100's 989 bf16 TFLOP/s; the input pipeline decoded about 500 images/s per CPU core here
(benchmarks/RESULTS.md, section 5), so a 16-core host feeds at most ~8,000 images/s, ~4 hours
for 90 epochs, whichever the net. The slower of the two bounds the run.
"""

from configs import default


def imagenet_config(model: str, shortcut=None):
  config = default.get_config()
  config.model.update(name=model, shortcut=shortcut, dtype='bfloat16', bn_group_size=32)
  config.dataset.update(name='imagenet2012', train_split='train', eval_split='validation',
                        image_size=224, augment=True)
  config.batch_size = 256
  config.eval_batch_size = 1000
  config.total_steps = 0
  config.total_epochs = 90.0
  config.optimizer.update(learning_rate=0.1, lr_reference_batch=256,
                          lr_boundaries=(30, 60, 80), lr_boundaries_unit='epochs')
  config.log_every_steps = 100
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 5_000
  return config
