"""Finding normalization modules: what each computes, and where it sits in the model."""
