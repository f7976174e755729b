"""Training: a functional TrainState, pure steps, data parallelism, checkpoints, the fit loop."""
