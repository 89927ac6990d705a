"""One fusion step from decoded camera images to a fused colour image (no ROS import).

Shared by the ROS node, ``occo-bag`` and ``occo-fuse`` so that the same pair gives the same
fused image everywhere. Stages, each timed (milliseconds, for diagnostics and benchmarks):

* preprocess: thermal warped into the fusion frame at the network size and normalised to
  [0,1]; RGB cropped/resized to the output size, split into luminance Y (resized to the
  network size, /255) and chroma (kept at the output size);
* inference: the engine fuses visible Y and infrared into fused Y (clamped to [0,1]);
* compose: fused Y resized to the output size and recombined with the visible chroma.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import time

import cv2
import numpy as np

from occo_ros.color import compose_rgb, luma_chroma
from occo_ros.engines import create_engine
from occo_ros.engines.base import FusionEngine
from occo_ros.params import FusionParams
from occo_ros.registration import Registration
from occo_ros.resources import default_model_path
from occo_ros.thermal import ThermalNormalizer, normalize_thermal


@dataclass
class PreparedPair:
    """Network inputs and what compose needs, produced by :meth:`FusionPipeline.preprocess`."""

    visible_y: np.ndarray      # (1, 1, H_in, W_in) float32 in [0,1]
    infrared: np.ndarray       # (1, 1, H_in, W_in) float32 in [0,1]
    chroma: np.ndarray         # (H_out, W_out, 3) uint8 visible YCbCr (color.luma_chroma)
    times_ms: dict = field(default_factory=dict)


@dataclass
class FusedFrame:
    """The fused colour image and the time each stage took."""

    rgb: np.ndarray            # (H_out, W_out, 3) uint8, RGB order
    fused_y: np.ndarray        # (H_in, W_in) float32 in [0,1], the network output
    times_ms: dict

    def in_encoding(self, encoding: str) -> np.ndarray:
        """The fused image as 'rgb8', 'bgr8' or 'mono8' (its luminance) pixels."""
        if encoding == 'rgb8':
            return self.rgb
        if encoding == 'bgr8':
            return cv2.cvtColor(self.rgb, cv2.COLOR_RGB2BGR)
        if encoding == 'mono8':
            return cv2.cvtColor(self.rgb, cv2.COLOR_RGB2GRAY)
        raise ValueError(f"unknown output encoding {encoding!r}; use 'rgb8', 'bgr8' or 'mono8'")


class FusionPipeline:
    """Preprocess, infer and compose; stateless except for the thermal normaliser's range."""

    def __init__(self, engine: FusionEngine, registration: Registration,
                 normalizer: ThermalNormalizer, input_size: tuple[int, int],
                 output_size: tuple[int, int]) -> None:
        """``input_size`` (network) and ``output_size`` (fused image) are (width, height)."""
        self.engine = engine
        self.registration = registration
        self.normalizer = normalizer
        self.input_size = input_size
        self.output_size = output_size

    def preprocess(self, thermal: np.ndarray, rgb: np.ndarray,
                   rgb_order: str = 'rgb') -> PreparedPair:
        """Thermal (H,W) uint8/uint16/float32 and RGB (H,W,3) uint8 in ``rgb_order`` order
        (or (H,W) gray) into network inputs."""
        start = time.perf_counter()
        # Range statistics from the raw frame: the warped one may hold a border of zeros
        # outside the thermal field of view, which would drag the range down.
        lo, hi = self.normalizer.update(thermal)
        ir = normalize_thermal(self.registration.warp_thermal(thermal, self.input_size), lo, hi)
        visible = self.registration.crop_rgb(rgb, self.output_size)
        y, chroma = luma_chroma(visible, rgb_order)
        y_in = cv2.resize(y, self.input_size, interpolation=cv2.INTER_AREA)
        visible_y = np.multiply(y_in, np.float32(1.0 / 255.0), dtype=np.float32)
        elapsed = (time.perf_counter() - start) * 1e3
        return PreparedPair(visible_y[None, None], ir[None, None], chroma,
                            {'preprocess': elapsed})

    def infer(self, prepared: PreparedPair) -> np.ndarray:
        """Run the network; returns fused Y (H_in, W_in) float32 and records the time."""
        start = time.perf_counter()
        fused = self.engine.infer(prepared.visible_y, prepared.infrared)
        prepared.times_ms['inference'] = (time.perf_counter() - start) * 1e3
        return fused[0, 0]

    def compose(self, fused_y: np.ndarray, prepared: PreparedPair) -> FusedFrame:
        """Fused Y at the output size + visible chroma -> RGB uint8."""
        start = time.perf_counter()
        y_out = cv2.resize(fused_y, self.output_size, interpolation=cv2.INTER_LINEAR)
        rgb = compose_rgb(y_out, prepared.chroma)
        prepared.times_ms['compose'] = (time.perf_counter() - start) * 1e3
        return FusedFrame(rgb, fused_y, prepared.times_ms)

    def fused_camera_info(self, info) -> dict:
        """Fields of the fused image's sensor_msgs/CameraInfo, from the RGB camera's (any
        object with width, height, k, p, d, r, distortion_model): K and P adapted to the crop
        and the output size; distortion and R copied. Raises ValueError for a bad K or P."""
        k, p = self.registration.adapt_camera_matrices(
            np.asarray(info.k, np.float64).reshape(3, 3),
            np.asarray(info.p, np.float64).reshape(3, 4), (info.width, info.height))
        return {'width': self.output_size[0], 'height': self.output_size[1],
                'distortion_model': info.distortion_model, 'd': info.d,
                'k': k.ravel().tolist(), 'r': info.r, 'p': p.ravel().tolist()}

    def fuse(self, thermal: np.ndarray, rgb: np.ndarray, rgb_order: str = 'rgb') -> FusedFrame:
        """All three stages in sequence."""
        prepared = self.preprocess(thermal, rgb, rgb_order)
        return self.compose(self.infer(prepared), prepared)


def thermal_normalizer(params: FusionParams) -> ThermalNormalizer:
    """The thermal normaliser the parameters describe."""
    return ThermalNormalizer(params.thermal_mode, lo=params.thermal_min, hi=params.thermal_max,
                             percentiles=params.thermal_percentiles,
                             smoothing=params.thermal_smoothing)


def create_pipeline(params: FusionParams,
                    log: Callable[[str], None] | None = None) -> FusionPipeline:
    """Load the engine and build the pipeline; raises EngineError (or CheckpointError) with a
    message naming the model path and what was expected when the model cannot be used."""
    input_size = (params.input_width, params.input_height)
    output_size = (params.output_width, params.output_height)
    engine = create_engine(
        params.backend, params.model_path or str(default_model_path()), device=params.device,
        precision=params.precision, input_size=(params.input_height, params.input_width),
        cache_dir=params.engine_cache_dir or None, build_only=params.build_only,
        force_rebuild=params.force_rebuild, num_threads=params.num_threads or None, log=log)
    registration = Registration(homography=np.asarray(params.homography).reshape(3, 3),
                                crop=tuple(params.crop), output_size=output_size)
    return FusionPipeline(engine, registration, thermal_normalizer(params), input_size,
                          output_size)
