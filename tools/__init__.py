"""Commands beside training: evaluating a checkpoint, planning a TPU run."""
