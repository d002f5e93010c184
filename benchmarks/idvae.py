"""IDVAE train-step throughput against the VAE-GAN with the same trunk and decoder (and the plain VAE), same run.

IDVAE has no public implementation to time against; its paper's cost argument is one shared trunk instead of an
encoder plus a separate discriminator, so the anchor is essence's own VAE-GAN built from identical parts.
See :mod:`essence.idvae.benchmark` for the protocol.

    python benchmarks/idvae.py --steps 20 --repeats 3 --batch 64
"""

from __future__ import annotations

import sys

from essence.core.precision import machine_line
from essence.idvae.benchmark import main

if __name__ == "__main__":
    print(machine_line(precision="auto"))
    sys.exit(main())
