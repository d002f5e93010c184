"""ImageNet-C / ImageNet-P (Hendrycks & Dietterich, ICLR 2019): the 19 corruptions, batched in torch, the
perturbation sequences, and the robustness benchmark (CE, mCE, relative mCE, FP, T5D).

    >>> from essence.corruptions import corrupt, corruption_names
    >>> y = corrupt(image_uint8_hwc, "fog", 3, seed=0)          # numpy in, numpy out
    >>> y = corrupt(batch_nchw_float, "motion_blur", 5, seed=0)  # torch in (any device), torch out
"""

from essence.corruptions.api import (
    MIN_SIZE,
    Corrupt,
    CorruptedDataset,
    corrupt,
    corrupt_tensor,
    jpeg_storage,
    make_generator,
)
from essence.corruptions.functional import CORRUPTIONS, ORDER, SUBSETS, Corruption, corruption_names
from essence.corruptions.params import PARAM_SETS, PARAMS, choose_param_set

__all__ = ["corrupt", "corrupt_tensor", "Corrupt", "CorruptedDataset", "CORRUPTIONS", "Corruption", "ORDER",
           "SUBSETS", "corruption_names", "PARAMS", "PARAM_SETS", "choose_param_set", "make_generator",
           "MIN_SIZE", "jpeg_storage"]
