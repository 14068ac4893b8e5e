"""Training: one loop for every method, its configuration, and small models."""
from .config import TrainConfig
from .loop import CRITERIA, RunResult, criterion_value, evaluate, fit, predict_logits
from .models import build_model

__all__ = ["TrainConfig", "CRITERIA", "RunResult", "criterion_value", "evaluate", "fit", "predict_logits",
           "build_model"]
