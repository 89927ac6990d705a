"""The TensorRT backend: shared imports and logger (common), engine build (build), the plan
cache (cache), execution (runtime) and the backend that ties them (engine)."""
