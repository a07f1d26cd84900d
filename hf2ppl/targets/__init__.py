"""Lowerings of the IR to probabilistic-programming targets."""
