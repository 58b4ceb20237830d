"""Loading a model: where it comes from, transformers loading, devices, text and tokens."""
