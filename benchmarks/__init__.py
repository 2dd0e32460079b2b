"""keras-edge benchmarks: every exported variant against the original Keras model."""
