"""Method-agnostic machinery shared by every essence method. Never imports a method.

Modules: ``config`` (frozen configs, presets, overrides), ``registry`` (named registries with suggestions),
``runtime`` (seeding, devices), ``distributed`` (torchrun helpers that also work in one process), ``loop``
(precision, accumulation, schedules, interrupts), ``checkpoint`` (atomic safetensors checkpoints, exact resume),
``runs`` / ``report`` (run directories and reproduction reports), ``progress`` (bars and tables), ``cli``.
"""
