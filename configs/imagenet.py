"""ImageNet with the paper's recipe; the per-model files (imagenet_r50.py, ...) call this.

SGD, momentum 0.9, weight decay 1e-4, batch 256, lr 0.1 (scaled linearly with the batch),
divided by 10 at epochs 30, 60 and 80 of 90; scale augmentation [256, 480], random 224 crops and
flips, PCA lighting, mean subtraction; bfloat16 compute with float32 parameters.

    python main.py --config=configs/imagenet_r50.py --workdir=/tmp/resnet_jax/imagenet_r50

Prepare ``imagenet2012`` with tfds first (the tar files go to ``<data_dir>/downloads/manual``;
see the README).

Expected runtimes in the per-model files are estimates (no GPU figure is measured yet): compute
is 90 epochs x 1.28M images x 3 (forward and backward) x 2 FLOPs per multiply-add at 30% of an
H100's 989 bf16 TFLOP/s; the train preprocessing ran at about 650 images per CPU second per
core on real photographs here (benchmarks/RESULTS.md, section 5b; 2.2x PIL + torchvision), so a
16-core host feeds at most ~10,500 images/s, ~3 hours for 90 epochs, whichever the net. The
slower of the two bounds the run.
"""

from configs import default


def imagenet_config(model: str, shortcut=None):
  config = default.get_config()
  config.model.update(name=model, shortcut=shortcut, dtype='bfloat16')
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
