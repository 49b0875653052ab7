"""Datasets: facts, tfds input pipelines, augmentation."""
