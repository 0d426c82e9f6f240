"""Registered alignment algorithms: one module each, found by :func:`harness.registry.discover`.

To add one, drop a module here with a hyperparameter dataclass and a class decorated with
``@register(name, description, Config)`` whose ``train(ctx)`` returns the trained policy. Keep heavy
imports (torch, transformers, TRL) inside functions so listing stays cheap. See README "Adding an
algorithm".
"""
