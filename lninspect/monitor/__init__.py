"""Norms over training: `lninspect.watch` for a training loop, a transformers TrainerCallback
built on it, and the compare job of several models or checkpoints.

The package is named `monitor`, not `watch`: a subpackage of that name would replace the API
function `lninspect.watch` as soon as it is imported.
"""
