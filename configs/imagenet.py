"""ImageNet, any ImageNet-family net: ``configs/imagenet.py:MODEL[,OPTION...]``.

SGD, momentum 0.9, weight decay 1e-4, batch 256, lr 0.1 (scaled linearly with the batch),
divided by 10 at epochs 30, 60 and 80 of 90 (the schedule of Goyal et al. 2017, "Accurate,
Large Minibatch SGD"; fb.resnet.torch divides at 30 and 60 only, with Nesterov momentum; the paper
divides "when the error plateaus", see docs/deviations.md); scale augmentation [256, 480],
random 224 crops and flips, PCA lighting, mean subtraction; bfloat16 compute with float32
parameters.
Evaluations and checkpoints come every epoch, whatever the batch.

Above batch 256 the scaled rate (0.1 x batch / 256) is reached by a linear ramp from 0.1 over
the first 5 epochs (Goyal et al. 2017, "Accurate, Large Minibatch SGD": with it, batch 8,192
matches batch 256; without it, large batches lose accuracy or diverge). It is beyond the paper,
which trains at 256; ``--config.optimizer.scaling_warmup_epochs=0`` starts at the scaled rate.

    python main.py --config=configs/imagenet.py:resnet50 --workdir=/tmp/resnet_jax/imagenet_r50
    python main.py --config=configs/imagenet.py:resnet34,A --workdir=/tmp/resnet_jax/imagenet_r34_a
    python main.py --config=configs/imagenet.py:resnet50,plateau --workdir=/tmp/resnet_jax/r50_plateau
    python main.py --config=configs/imagenet.py:resnet50,lars --workdir=/tmp/resnet_jax/r50_lars

MODEL: resnet18, resnet34, resnet50, resnet101, resnet152, plain18, plain34, and the nets that
followed the paper (docs/models.md): preact_resnet18 ... preact_resnet200, wide_resnet50_2,
wide_resnet101_2, resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, resnet50d; each with its
own stride placement (``model.bottleneck_stride_on``: the paper's 1x1 for its nets, the 3x3 for
those of torchvision, timm and fb.resnet.torch). They train with this recipe, which is
torchvision's for its wide ResNets and ResNeXts (docs/deviations.md). OPTIONs: A, B or C,
the shortcut option of Table 3 (default B); ``plateau``, the paper's schedule (lr /10 when the
validation error has not improved for 5 epochs, 120 epochs); ``pixel_mean``, the paper's
per-pixel mean subtraction; ``lars``, the MLPerf large-batch recipe (below); ``deep_stem`` and
``avg_down``, ResNet-D's stem and shortcut on any net (He et al. 2019, "Bag of Tricks"). Options
apply in the order given. ``configs/imagenet_r50.py`` is an alias of
``configs/imagenet.py:resnet50``.

The recipes that followed the paper, each an option (``configs/recipes.py`` gives each one's
source, published figure and departures; docs/training.md, "Named recipes", when to use which):
``torchvision_v2`` (torchvision's new recipe, 80.858 % top-1 for ResNet-50 in 600 epochs:
SGD, cosine, TrivialAugmentWide, random erasing, mixup / cutmix, label smoothing, EMA, train 176 /
test 232-224), ``rsb_a1``, ``rsb_a2``, ``rsb_a3`` ("ResNet strikes back": 80.4 / 79.8 / 78.1 % in
600 / 300 / 100 epochs: LAMB, binary cross-entropy, RandAugment, mixup / cutmix). They set the
ResNet-50 of torchvision and timm (stride on the 3x3).

    python main.py --config=configs/imagenet.py:resnet50,torchvision_v2 --workdir=/tmp/r50_tv2

``lars``: the MLPerf ResNet-50 reference's recipe for batch 4,096 (mlcommons/training,
image_classification/README_tensorflow2.md and lars_optimizer.py, lars_util.py; LARS from You,
Gitman and Ginsburg 2017, "Large Batch Training of Convolutional Networks"), beyond the paper:
batch 4,096, LARS with trust coefficient 0.001, epsilon 0 and momentum 0.9 on the kernels
(BatchNorm parameters and biases: plain momentum SGD, no weight decay), weight decay 2e-4, label
smoothing 0.1, lr 10.0 at batch 4,096 (0.625 per 256, scaled linearly at other batches: our
choice; the reference picks 25.0 from 16k and 31.2 from 32k), a 5-epoch warm-up, then
polynomial (power 2) decay to 1e-4 at the end of 42 epochs (the reference's budget; it stops
once it reaches 75.9% top-1). The reference warms up from 0 and trains ResNet-50 v1.5
(``--config.model.bottleneck_stride_on=3x3``); here the ramp starts at the base rate, as Goyal
et al.'s, and the net stays the config's.

BatchNorm statistics come from groups of 32 images (``model.bn_group_size=32``), as in the paper,
where each of 8 GPUs normalised its own 32 of the 256 images. It also suits a pod: statistics of
the whole global batch need small all-reduces across every chip in every BatchNorm layer, forward
and backward, each on the critical path (197 per ResNet-50 step on a v5e:4x4 slice), while groups
within a chip leave only the gradients' all-reduce, which XLA merges into a couple
(``tools/tpu_plan.py``; benchmarks/RESULTS.md, section 8). Global statistics are one flag
away: ``--config.model.bn_group_size=0``. The group must divide the per-chip batch
(``batch_size`` / number of chips): on more than 8 chips, raise ``batch_size`` with them.

Prepare ``imagenet2012`` with tfds first (the tar files go to ``<data_dir>/downloads/manual``;
see the README).

Expected runtimes are estimates (no GPU figure is measured yet): compute is 90 epochs x 1.28M
images x 3 (forward and backward) x 2 FLOPs per multiply-add at 30% of an H100's 989 bf16
TFLOP/s; the train preprocessing ran at about 650 images per CPU second per core on real
photographs here (benchmarks/RESULTS.md, section 5b; 2.2x PIL + torchvision), so a 16-core host
feeds at most ~10,500 images/s, ~3 hours for 90 epochs, whichever the net. The slower of the two
bounds the run.

| net | multiply-adds per image | H100-hours of compute | on 8 H100s |
|---|---|---|---|
| resnet18, plain18 | 1.81e9 | 1.2 | 9 minutes |
| resnet34, plain34 | 3.66e9 | 2.3 | 17 minutes |
| resnet50 | 3.86e9 | 2.5 | 19 minutes |
| resnet101 | 7.57e9 | 4.8 | 36 minutes |
| resnet152 | 11.28e9 | 7.2 | 54 minutes |
| preact_resnet18, preact_resnet34 | as resnet18, resnet34 | | |
| preact_resnet50 / 101 / 152 / 200 | 4.09e9 / 7.80e9 / 11.5e9 / 15.0e9 | 2.6 / 5.1 / 7.4 / 9.7 | 20 / 38 / 56 / 73 minutes |
| wide_resnet50_2, wide_resnet101_2 | 11.4e9, 22.8e9 | 7.4, 14.8 | 55, 111 minutes |
| resnext50_32x4d | 4.23e9 | 2.7 | 21 minutes |
| resnext101_32x8d, resnext101_64x4d | 16.4e9, 15.5e9 | 10.6, 10.0 | 80, 75 minutes |
| resnet50d | 4.33e9 | 2.8 | 21 minutes |
"""

from configs import arguments, default, recipes
from resnet_jax import models

MODELS = arguments.family_models('imagenet')


def imagenet_config(model: str):
  config = default.get_config()
  config.model.update(name=model, dtype='bfloat16', bn_group_size=32,
                      bottleneck_stride_on=models.create_model(model, 1).bottleneck_stride_on)
  config.dataset.update(name='imagenet2012', train_split='train', eval_split='validation',
                        image_size=224, augment=True)
  config.batch_size = 256
  config.eval_batch_size = 1000
  config.total_steps = 0
  config.total_epochs = 90.0
  # The plateau patience in epochs, so that it means the same time at every batch size.
  config.optimizer.update(learning_rate=0.1, lr_reference_batch=256,
                          lr_boundaries=(30, 60, 80), lr_boundaries_unit='epochs',
                          plateau_patience=0, plateau_patience_epochs=5.0)
  config.log_every_steps = 100
  config.eval_every_steps = 0
  config.eval_every_epochs = 1.0
  config.checkpoint_every_steps = 0
  config.checkpoint_every_epochs = 1.0
  return config


def plateau(config):
  """The paper's schedule: lr /10 when the validation error plateaus (here: has not dropped by
  0.1 points of top-1 error in 5 epochs); 60x10^4 iterations of 256 images, 120 epochs."""
  config.optimizer.schedule = 'plateau'
  config.total_epochs = 120.0


def pixel_mean(config):
  """The paper's per-pixel mean subtraction instead of the per-channel RGB mean."""
  config.dataset.imagenet_per_pixel_mean = True


def lars(config):
  """The MLPerf ResNet-50 reference's large-batch recipe (see the module docstring)."""
  config.batch_size = 4096
  config.total_epochs = 42.0
  config.label_smoothing = 0.1
  config.optimizer.update(
      name='lars', lars_trust_coefficient=0.001, lars_epsilon=0.0, momentum=0.9,
      weight_decay=2e-4, weight_decay_on='kernels', learning_rate=10.0 * 256 / 4096,
      lr_reference_batch=256, scaling_warmup_epochs=5.0, schedule='polynomial', decay_power=2.0,
      end_learning_rate=1e-4)


def shortcut(option: str):
  """Table 3's shortcut option ``option`` instead of the family's default (B)."""
  return lambda config: config.model.update(shortcut=option)


def deep_stem(config):
  """ResNet-C's stem: three 3x3 convolutions (32, 32, 64 filters) instead of the 7x7."""
  config.model.deep_stem = True


def avg_down(config):
  """ResNet-D's shortcut: 2x2 average pooling before each strided projection."""
  config.model.avg_down = True


def recipe(name: str, parts: dict):
  """The option of a recipe of ``configs/recipes.py``, instead of the paper's."""
  return lambda config: recipes.apply(config, name, parts)


# The named recipes that followed the paper (configs/recipes.py, docs/training.md).
RECIPES = {'torchvision_v2': recipe('torchvision_v2', recipes.TORCHVISION_V2),
           **{f'rsb_{v}': recipe(f'rsb_{v}', recipes.rsb(v)) for v in ('a1', 'a2', 'a3')}}

OPTIONS = {**{s: shortcut(s) for s in models.SHORTCUT_OPTIONS},
           'plateau': plateau, 'pixel_mean': pixel_mean, 'lars': lars,
           'deep_stem': deep_stem, 'avg_down': avg_down, **RECIPES}


def get_config(arg: str = 'resnet50'):
  model, options = arguments.parse(arg, file='configs/imagenet.py', model_names=MODELS,
                                   options=OPTIONS, exclusive=[models.SHORTCUT_OPTIONS,
                                                               ('lars', 'plateau', *RECIPES)])
  config = imagenet_config(model)
  for option in options:
    option(config)
  return config

