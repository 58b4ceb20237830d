"""The pre-LN vs post-LN experiment: a reference GPT and the runs on it."""
