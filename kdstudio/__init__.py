"""KD Studio: knowledge-distillation experiments you can see."""

__version__ = "0.1.0"
