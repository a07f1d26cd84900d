"""Inference on compiled models: frequentist (fits, CLs, limits) and Bayesian (NUTS/HMC, SVI, MAP)."""
