"""The training workstation: dataset readers -> preprocessed arrays -> Siamese training -> evaluation.

Each stage runs on its own: `python -m edge_verify.training.datasets ROOT`, `edge-verify train`,
`edge-verify evaluate`. TensorFlow is needed for training and for evaluating Keras models.
"""
