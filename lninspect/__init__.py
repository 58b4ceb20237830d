"""lninspect: normalization statistics inside GPT-style models."""
__version__ = "0.1.0"
