"""Input stage: layouts, reading, checking and fingerprinting image/mask pairs."""

from .dataset import Batch, DataFile, Dataset, iter_batches, load_arrays, load_dataset
from .layouts import ISIC_LAYOUTS, Discovery, Sample, discover

__all__ = [
    "Batch", "DataFile", "Dataset", "Discovery", "ISIC_LAYOUTS", "Sample",
    "discover", "iter_batches", "load_arrays", "load_dataset",
]
