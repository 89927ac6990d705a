"""What an occo-eval metric process runs: its set-up and one timed scoring.

Kept apart from training.evaluate so that a spawned metric process imports only OpenCV,
numpy and the metrics: unpickling a function of training.evaluate imported torch there
(about 3 CPU s per process, each run).
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from occo_ros.util.allocator import tune_allocator

from .metrics import evaluate_fusion


def init_metric_process() -> None:
    """One OpenCV thread (the processes already fill the cores), and glibc keeps freed
    blocks: the metrics allocate many 2.4 MB float64 temporaries per 640x480 image, whose
    page faults cost ~40 % of the metric time in a fresh process otherwise."""
    cv2.setNumThreads(1)
    tune_allocator()


def timed_scores(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray,
                 legacy: bool) -> tuple[dict[str, float], float]:
    """evaluate_fusion and its duration in seconds."""
    start = time.perf_counter()
    scores = evaluate_fusion(ir, vi, fused, legacy)
    return scores, time.perf_counter() - start
