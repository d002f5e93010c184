"""essence: nine landmark 2019 machine-learning papers, faithful, fast, and runnable on a laptop CPU.

Each method lives in its own sub-package (``essence.moco``, ``essence.corruptions``, ...) and is also reachable
from the ``essence`` command line. ``essence.core`` holds the machinery they share.
"""

__version__ = "0.1.0"
