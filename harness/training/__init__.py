"""Optimisation plumbing every trained method shares: the loop, pre-training of π_SFT, models and tokenizers, log-probabilities, resumable checkpoints, hyperparameter bases, the reward model."""
