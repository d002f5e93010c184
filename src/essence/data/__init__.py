"""Offline data sources shared by the methods, one module per source. Nothing here downloads anything."""

from essence.data.cache import cache_dir, cache_key, missing_source_error, package_path
from essence.data.fashion_mnist import CLASSES as FASHION_MNIST_CLASSES
from essence.data.fashion_mnist import load_fashion_mnist, read_idx
from essence.data.photos import load_photo, photo_names

__all__ = ["cache_dir", "cache_key", "missing_source_error", "package_path", "load_fashion_mnist", "read_idx",
           "FASHION_MNIST_CLASSES", "load_photo", "photo_names"]
