"""Empirical risk minimization: mean cross-entropy on uniform batches."""
from .base import Method, register


@register()
class ERM(Method):
    name = "erm"
    batched = True
