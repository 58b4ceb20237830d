"""The capture hooks: per-token reductions on the device, spikes, parameter gradients.

The `capture` context manager lives in lninspect.hooks.capture (a package named capture
would shadow the API function `lninspect.capture`).
"""
