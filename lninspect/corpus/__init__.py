"""A corpus streamed through the hooked model: reader, aggregator, torchrun, the job."""
