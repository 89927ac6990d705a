"""One fusion step from decoded camera images to a fused colour image (no ROS import).

Shared by the ROS node, ``occo-bag`` and ``occo-fuse`` so that the same pair gives the same
fused image everywhere. Stages, each timed (milliseconds, for diagnostics and benchmarks):

* preprocess: thermal warped into the fusion frame at the network size and normalised to
  [0,1]; RGB cropped/resized to the output size, split into luminance Y (resized to the
  network size, /255) and chroma (kept at the output size);
* inference: the engine fuses visible Y and infrared into fused Y (clamped to [0,1]);
* compose: fused Y resized to the output size and recombined with the visible chroma.

:meth:`FusionPipeline.fuse_frame` is the one frame step every front end calls: camera
messages (or decoded images) in, the fused image in the requested encoding, the fused
camera_info fields and the stage times out. Its one error policy: a frame that cannot be
fused is a :class:`FrameResult` whose ``problems`` say why (:data:`REASONS`), never an
exception, so a bad frame is counted by the caller and the stream goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import time
from typing import Any

import cv2
import numpy as np

from occo_ros.calibration.file import registration_from_params
from occo_ros.core import codec
from occo_ros.core.color import COLOR_MODES, compose_rgb, luma_chroma, prepare_compose
from occo_ros.core.registration import Registration
from occo_ros.core.thermal import ThermalNormalizer, normalize_thermal
from occo_ros.engines import EngineSpec, create_engine
from occo_ros.engines.base import FusionEngine
from occo_ros.model.contract import output_problem
from occo_ros.params import OUTPUT_ENCODINGS, FusionSettings


def check_encoding(encoding: str) -> None:
    """Raise ValueError unless ``encoding`` is one of :data:`OUTPUT_ENCODINGS`."""
    if encoding not in OUTPUT_ENCODINGS:
        raise ValueError(f'unknown output encoding {encoding!r}; use one of '
                         f'{list(OUTPUT_ENCODINGS)}')


@dataclass
class PreparedPair:
    """Network inputs and what compose needs, produced by :meth:`FusionPipeline.preprocess`."""

    visible_y: np.ndarray      # (1, 1, H_in, W_in) float32 in [0,1]
    infrared: np.ndarray       # (1, 1, H_in, W_in) float32 in [0,1]
    chroma: np.ndarray         # (H_out, W_out, 3) uint8 visible YCbCr (color.luma_chroma)
    times_ms: dict = field(default_factory=dict)
    fused: Any = None          # the engine's output as returned, set by infer


@dataclass
class FusedFrame:
    """The fused colour image and the time each stage took."""

    rgb: np.ndarray            # (H_out, W_out, 3) uint8, RGB order
    fused_y: np.ndarray        # (H_in, W_in) float32 in [0,1], the network output
    times_ms: dict

    def in_encoding(self, encoding: str) -> np.ndarray:
        """The fused image as 'rgb8', 'bgr8' or 'mono8' (its luminance) pixels."""
        check_encoding(encoding)
        if encoding == 'rgb8':
            return self.rgb
        if encoding == 'bgr8':
            return cv2.cvtColor(self.rgb, cv2.COLOR_RGB2BGR)
        return cv2.cvtColor(self.rgb, cv2.COLOR_RGB2GRAY)


#: Why (part of) a frame could not be used, one counter each: the thermal or RGB image cannot
#: be decoded or is not an image of its kind; the camera_info cannot be adapted (the image is
#: still fused, only fused camera_info is missing); the decoded pair is rejected by
#: registration or colour conversion; the inference engine failed; the network's output is
#: unusable (model_contract.output_problem: non-finite, out of range, constant, or no longer
#: depending on the thermal image), so the frame is not published.
BAD_THERMAL, BAD_RGB, BAD_CAMERA_INFO = 'bad_thermal', 'bad_rgb', 'bad_camera_info'
BAD_PAIR, ENGINE_ERROR, BAD_OUTPUT = 'bad_pair', 'engine_error', 'bad_output'
REASONS = (BAD_THERMAL, BAD_RGB, BAD_CAMERA_INFO, BAD_PAIR, ENGINE_ERROR, BAD_OUTPUT)
_STREAM = {BAD_THERMAL: 'thermal', BAD_RGB: 'rgb', BAD_CAMERA_INFO: 'camera_info',
           BAD_PAIR: 'pair', ENGINE_ERROR: 'engine', BAD_OUTPUT: 'engine'}
#: What :meth:`FusionPipeline.fuse_frame` accepts as an image: a sensor_msgs/Image or
#: CompressedImage (rclpy's, rosbags', or any object with their fields; see occo_ros.core.codec),
#: a decoded :class:`codec.DecodedImage` (array + channel order), or a 2-D array (gray).
ImageInput = Any


@dataclass(frozen=True)
class FrameProblem:
    """One thing wrong with a frame: ``reason`` (one of :data:`REASONS`, the counter),
    ``kind`` (finer: the codec's reason or the exception's class, for log throttling and
    summaries) and ``message`` (what is wrong, for the log)."""

    reason: str
    kind: str
    message: str

    @property
    def stream(self) -> str:
        """What the problem is about: 'thermal', 'rgb', 'camera_info', 'pair' or 'engine'."""
        return _STREAM[self.reason]


@dataclass
class FrameResult:
    """What :meth:`FusionPipeline.fuse_frame` made of one thermal/RGB pair.

    ``pixels``: the fused image in ``encoding`` ((H, W, 3) uint8 for rgb8/bgr8, (H, W) for
    mono8), None when the frame could not be fused. ``fused_y``: the network output (H_in,
    W_in) float32 in [0,1]. ``camera_info``: fields of the fused sensor_msgs/CameraInfo
    (without header) when a camera_info was given and could be adapted. ``times_ms``: decode,
    preprocess, inference, compose (those that ran). ``problems``: everything wrong, the
    first one being why nothing was fused when ``ok`` is False.
    """

    pixels: np.ndarray | None
    encoding: str
    fused_y: np.ndarray | None = None
    camera_info: dict | None = None
    times_ms: dict = field(default_factory=dict)
    problems: tuple[FrameProblem, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the frame was fused (a camera_info problem alone leaves it ok)."""
        return self.pixels is not None

    @property
    def reason(self) -> str | None:
        """Why the frame was not fused (one of :data:`REASONS`), None when it was."""
        return None if self.ok else self.problems[0].reason

    def image_fields(self) -> dict:
        """The fused image as sensor_msgs/Image fields: ``Image(header=h, **fields)``."""
        if self.pixels is None:
            raise ValueError(f'nothing was fused ({self.reason}); check ok first')
        return codec.array_to_image_fields(self.pixels, self.encoding)


def decode(image: ImageInput) -> codec.DecodedImage:
    """An :data:`ImageInput` as a decoded image; raises codec.ImageDecodeError (bad data) or
    TypeError (a colour array without its channel order: pass codec.DecodedImage)."""
    if isinstance(image, codec.DecodedImage):
        return image
    if isinstance(image, np.ndarray):
        if image.ndim != 2:
            raise TypeError(f'a bare array must be gray (H, W), got shape {image.shape}; pass '
                            "codec.DecodedImage(array, order) for colour, e.g. order 'rgb'")
        return codec.DecodedImage(image, 'gray')
    if hasattr(image, 'format') and not hasattr(image, 'encoding'):
        return codec.decode_compressed(image.format, image.data)
    return codec.decode_image(image)


class FusionPipeline:
    """Preprocess, infer and compose; stateless except for the thermal normaliser's range."""

    def __init__(self, engine: FusionEngine, registration: Registration,
                 normalizer: ThermalNormalizer, input_size: tuple[int, int],
                 output_size: tuple[int, int], color_mode: str = COLOR_MODES[0]) -> None:
        """``input_size`` (network) and ``output_size`` (fused image) are (width, height);
        ``color_mode``: how compose recombines colour (occo_ros.core.color.COLOR_MODES)."""
        prepare_compose(color_mode)     # checks it; a compiled kernel is not the first frame's
        self.color_mode = color_mode
        self.engine = engine
        self.registration = registration
        self.normalizer = normalizer
        self.input_size = input_size
        self.output_size = output_size

    @classmethod
    def from_settings(cls, settings: FusionSettings, engine: FusionEngine,
                      registration: Registration | None = None) -> FusionPipeline:
        """The pipeline the fusion settings describe, around an engine already loaded (and
        the registration they describe, unless given)."""
        registration = registration or registration_from_params(settings)
        return cls(engine, registration, thermal_normalizer(settings),
                   (settings.input_width, settings.input_height),
                   (settings.output_width, settings.output_height), settings.color_mode)

    def preprocess(self, thermal: np.ndarray, rgb: np.ndarray,
                   rgb_order: str = 'rgb') -> PreparedPair:
        """Thermal (H,W) uint8/uint16/float32 and RGB (H,W,3) uint8 in ``rgb_order`` order
        (or (H,W) gray) into network inputs."""
        start = time.perf_counter()
        # Range statistics from the raw frame: the warped one may hold a border of zeros
        # outside the thermal field of view, which would drag the range down.
        lo, hi = self.normalizer.update(thermal)
        warped = self.registration.warp_thermal(thermal, self.input_size,
                                                rgb_size=(rgb.shape[1], rgb.shape[0]))
        ir = normalize_thermal(warped, lo, hi)
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
        prepared.fused = self.engine.infer(prepared.visible_y, prepared.infrared)
        prepared.times_ms['inference'] = (time.perf_counter() - start) * 1e3
        return prepared.fused[0, 0]

    def compose(self, fused_y: np.ndarray, prepared: PreparedPair) -> FusedFrame:
        """Fused Y at the output size + visible colour (``color_mode``) -> RGB uint8."""
        start = time.perf_counter()
        y_out = cv2.resize(fused_y, self.output_size, interpolation=cv2.INTER_LINEAR)
        rgb = compose_rgb(y_out, prepared.chroma, mode=self.color_mode)
        prepared.times_ms['compose'] = (time.perf_counter() - start) * 1e3
        return FusedFrame(rgb, fused_y, prepared.times_ms)

    def fused_camera_info(self, info, image_size: tuple[int, int] | None = None) -> dict:
        """Fields of the fused image's sensor_msgs/CameraInfo, from the RGB camera's (any
        object with width, height, k, p, d, r, distortion_model): K and P adapted to the crop
        and the output size; R copied, distortion too (zeros when the registration undistorts
        the RGB image). Raises ValueError for a camera_info that is not valid
        (:func:`camera_info_problem`) beside RGB images of ``image_size`` (W, H)."""
        problem = camera_info_problem(info, image_size)
        if problem:
            raise CameraInfoError(*problem)
        k, p = self.registration.adapt_camera_matrices(
            np.asarray(info.k, np.float64).reshape(3, 3),
            np.asarray(info.p, np.float64).reshape(3, 4), (info.width, info.height))
        d = [0.0] * len(info.d) if self.registration.undistorts_rgb else info.d
        return {'width': self.output_size[0], 'height': self.output_size[1],
                'distortion_model': info.distortion_model, 'd': d,
                'k': k.ravel().tolist(), 'r': info.r, 'p': p.ravel().tolist()}

    def fuse(self, thermal: np.ndarray, rgb: np.ndarray, rgb_order: str = 'rgb') -> FusedFrame:
        """All three stages in sequence on decoded arrays; raises on bad input (the frame
        step :meth:`fuse_frame` turns that into a result)."""
        prepared = self.preprocess(thermal, rgb, rgb_order)
        return self.compose(self.infer(prepared), prepared)

    def fuse_frame(self, thermal: ImageInput, rgb: ImageInput, camera_info: Any = None,
                   encoding: str = 'rgb8') -> FrameResult:
        """The frame step: decode, fuse, convert to ``encoding``, adapt ``camera_info``.

        ``thermal`` and ``rgb`` are :data:`ImageInput`; ``camera_info`` (optional) is the RGB
        camera's sensor_msgs/CameraInfo (any object with its fields). Never raises for bad
        data or a failing engine: see :class:`FrameResult`. Raises only for a caller's
        mistake: ValueError for an ``encoding`` not in :data:`OUTPUT_ENCODINGS`, TypeError for
        a colour array without its channel order (see :func:`decode`).
        """
        check_encoding(encoding)   # a caller's mistake: fail before any frame
        start = time.perf_counter()
        thermal_image, thermal_problem = _decoded(BAD_THERMAL, thermal, _check_thermal)
        rgb_image, rgb_problem = _decoded(BAD_RGB, rgb, _check_rgb)
        problems = tuple(p for p in (thermal_problem, rgb_problem) if p is not None)
        if problems:
            return FrameResult(None, encoding, problems=problems)
        times = {'decode': (time.perf_counter() - start) * 1e3}
        try:
            prepared = self.preprocess(thermal_image.array, rgb_image.array, rgb_image.order)
        except Exception as exc:  # noqa: BLE001 (one bad pair must never end a stream)
            return FrameResult(None, encoding, times_ms=times,
                               problems=(_problem(BAD_PAIR, exc, 'cannot fuse the pair'),))
        prepared.times_ms.update(times)
        try:
            fused_y = self.infer(prepared)
        except Exception as exc:  # noqa: BLE001 (EngineError or a backend's own exception)
            return FrameResult(None, encoding, times_ms=prepared.times_ms,
                               problems=(_problem(ENGINE_ERROR, exc, 'inference failed'),))
        # cost: bench/bench_output_check.py
        bad = output_problem(prepared.fused, prepared.visible_y, prepared.infrared)
        if bad is not None:   # never publish what the network got wrong
            return FrameResult(None, encoding, times_ms=prepared.times_ms, problems=(
                FrameProblem(BAD_OUTPUT, bad[0], f'bad network output: {bad[1]}'),))
        try:
            frame = self.compose(fused_y, prepared)
            start = time.perf_counter()
            pixels = frame.in_encoding(encoding)
            frame.times_ms['compose'] += (time.perf_counter() - start) * 1e3
        except Exception as exc:  # noqa: BLE001
            return FrameResult(None, encoding, fused_y, times_ms=prepared.times_ms,
                               problems=(_problem(BAD_PAIR, exc, 'cannot compose the pair'),))
        info, info_problems = None, ()
        if camera_info is not None:
            try:
                info = self.fused_camera_info(camera_info, rgb_image.array.shape[1::-1])
            except Exception as exc:  # noqa: BLE001 (a bad camera_info must not cost the image)
                info_problems = (_problem(BAD_CAMERA_INFO, exc, 'cannot adapt camera_info'),)
        return FrameResult(pixels, encoding, fused_y, info, frame.times_ms, info_problems)


#: Most distortion coefficients a camera_info may carry: OpenCV's longest model (rational +
#: thin prism + tilt) has 14; more is a broken driver, and would be copied into every output.
MAX_DISTORTION = 14


class CameraInfoError(ValueError):
    """A camera_info that cannot describe the fused image; ``reason`` (the log throttling's
    kind): 'distortion', 'matrix' or 'size'."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def camera_info_problem(info: Any, image_size: tuple[int, int] | None = None,
                        ) -> tuple[str, str] | None:
    """(reason, message) when an RGB camera_info cannot describe the fused image (reasons
    as :class:`CameraInfoError`), else None. Required: K (9), R (9) and P (12) finite, at
    most MAX_DISTORTION finite coefficients in D, and a size that is the RGB image's
    ``image_size`` (W, H) or the same aspect scaled (e.g. 640x360 beside 1280x720: a
    calibration at another resolution; the height within one pixel, or one scale step, of
    the scaled image's)."""
    if len(info.d) > MAX_DISTORTION:
        return 'distortion', (f'camera_info has {len(info.d)} distortion coefficients, at '
                              f'most {MAX_DISTORTION}')
    for name, count in (('k', 9), ('r', 9), ('p', 12), ('d', len(info.d))):
        values = np.asarray(getattr(info, name), np.float64).ravel()
        if values.size != count or not np.isfinite(values).all():
            return 'matrix', (f'camera_info {name.upper()} must be {count} finite numbers, '
                              f'got {values.tolist()}')
    width, height = int(info.width), int(info.height)
    if width <= 0 or height <= 0:
        return 'size', f'camera_info size {width}x{height} is not an image size'
    if image_size is not None and (width, height) != tuple(image_size):
        scale = image_size[0] / width
        if abs(height * scale - image_size[1]) > max(1.0, scale):
            return 'size', (f'camera_info describes {width}x{height} images, the RGB images '
                            f'are {image_size[0]}x{image_size[1]} (another aspect, so not a '
                            'rescaled calibration)')
    return None


def _problem(reason: str, exc: BaseException, what: str) -> FrameProblem:
    kind = getattr(exc, 'reason', None) or type(exc).__name__
    return FrameProblem(reason, kind, f'{what}: {type(exc).__name__}: {exc}')


def _decoded(reason: str, image: ImageInput, check: Callable[[codec.DecodedImage], None],
             ) -> tuple[codec.DecodedImage | None, FrameProblem | None]:
    """``image`` decoded and accepted by ``check``, or why not."""
    try:
        decoded = decode(image)
        check(decoded)
    except codec.ImageDecodeError as exc:
        return None, FrameProblem(reason, exc.reason, str(exc))
    return decoded, None


def _check_thermal(image: codec.DecodedImage) -> None:
    if image.order != 'gray':
        raise codec.ImageDecodeError(
            'channels', f'a thermal image needs one channel, got a {image.order} image of '
            f'shape {image.array.shape}')


def _check_rgb(image: codec.DecodedImage) -> None:
    if image.array.dtype != np.uint8:
        raise codec.ImageDecodeError(
            'dtype', f'a visible image needs 8-bit pixels, got {image.array.dtype}')


def thermal_normalizer(settings: FusionSettings) -> ThermalNormalizer:
    """The thermal normaliser the parameters describe."""
    return ThermalNormalizer(*settings.thermal)


def create_pipeline(settings: FusionSettings, engine: EngineSpec,
                    logger: object | None = None) -> FusionPipeline:
    """Load the engine ``engine`` describes and build the pipeline ``settings`` describe;
    raises EngineError (or CheckpointError) with a message naming the model path and what was
    expected when the model cannot be used. ``logger`` (.info/.warning: logging.Logger or a
    node's logger) gets the engine's lines."""
    size = (settings.input_height, settings.input_width)
    if engine.input_size not in (None, size):
        raise ValueError(f'the engine is built for {engine.input_size} (H, W), the settings '
                         f'resize to {size}: build both from the same parameter values')
    registration = registration_from_params(settings)  # a bad calibration file fails fast
    return FusionPipeline.from_settings(settings, create_engine(engine, logger), registration)


def image_pair_pipeline(engine: FusionEngine, size: tuple[int, int],
                        network_size: tuple[int, int] | None = None) -> FusionPipeline:
    """The frame step's pipeline for a registered 8-bit image pair of ``size`` (width,
    height): no warp or crop, infrared scaled /255 exactly as in training (fixed range
    0..255), the network at ``network_size`` (default: the pair's own size). Shared with
    occo-eval, so both score and write what the node would make of the pair."""
    return FusionPipeline(engine, Registration(output_size=size),
                          ThermalNormalizer('fixed', lo=0.0, hi=255.0), network_size or size,
                          size)
