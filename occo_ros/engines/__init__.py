"""Inference backends for FIFN and the one factory that chooses between them.

Every backend implements base.FusionEngine (float32 (N, 1, H, W) in [0, 1] in and out).
`create_engine(EngineSpec)` is the only place that knows backend types; callers (the ROS
node, the tools, benchmarks) build an EngineSpec from the parameter table (spec.py) and read
EngineInfo.

Model path kinds:
    .pt           FIFN checkpoint: torch runs it; onnxruntime and tensorrt export it to ONNX in
                  the cache folder first (keyed by checkpoint sha256 + shape + opset,
                  re-exported when the network/exporter code or torch changes).
    .onnx         from occo-export: onnxruntime or tensorrt.
    .engine/.plan prebuilt TensorRT plan: tensorrt only (cannot be rebuilt from here).
"""

from occo_ros.engines.base import EngineError, EngineInfo, FusionEngine
from occo_ros.engines.factory import create_engine, dry_run
from occo_ros.engines.spec import BACKENDS, PRECISIONS, EngineSpec

__all__ = ['BACKENDS', 'PRECISIONS', 'EngineError', 'EngineInfo', 'EngineSpec', 'FusionEngine',
           'create_engine', 'dry_run']
