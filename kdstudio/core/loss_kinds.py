"""The names of the loss functions' variants, without torch: the config lists them as
allowed values (it must import before torch) and losses.py checks its arguments against them."""

from __future__ import annotations

LOGIT_LOSSES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl")
HIDDEN_LOSSES = ("mse", "cosine")
EMBEDDING_LOSSES = ("mse", "cosine", "mse+cosine")
SPARSE_LOSSES = LOGIT_LOSSES  # the cached (top-k) logit loss offers the same divergences
