"""The FIFN network, its checkpoints, the graph contract every backend checks, the ONNX
export and the validated artifact cache."""
