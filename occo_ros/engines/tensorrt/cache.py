"""TensorRT engine cache: the key, file names, plan header version, load-or-build policy.

Pure Python (no tensorrt import), so the cache decision is testable anywhere. The TensorRT
backend passes its real build and load functions to `resolve_engine`.

Policy (ROS2_NOTES.md §2.3): an engine is reused only if its sidecar JSON matches the key
we expect now (sha256 of the ONNX file, TensorRT version, GPU name, compute capability, SM
count or DLA core, precision, input size, build-recipe hash; occo_ros.model.artifact_cache, the
scheme every cached artifact uses), its bytes are the ones cached, and it deserialises with the
expected IO tensors. Anything else is logged as found vs expected and the engine is
rebuilt instead of crashing. Files are written atomically (temp + rename), so an interrupted
build never leaves a truncated engine behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
import json
import logging
import os
from pathlib import Path
import re
import time
from typing import Generic, TypeVar

from occo_ros.model.artifact_cache import (
    default_cache_dir,
    key_mismatches,
    read_sidecar,
    sha256_file,
    sidecar_path,
    write_artifact,
)
from occo_ros.model.contract import EngineError
from occo_ros.params import PRECISIONS

_LOG = logging.getLogger('occo_ros.engines')

__all__ = ['BuiltPlan', 'CacheResult', 'EngineKey', 'decide', 'default_cache_dir',
           'plan_trt_version', 'resolve_engine', 'sha256_file', 'sidecar_path']

# Bytes 24..26 of a serialized plan hold the TensorRT major, minor and patch version that
# built it. Not a documented API: NVIDIA's answer in NVIDIA/TensorRT#3073
# (issuecomment-1599934548), used by Autoware's tensorrt_common (PR #10320). Treated as a
# hint only: deserialisation remains the final check.
_PLAN_VERSION_OFFSET = 24


def slug(text: str) -> str:
    """Lower-case `text` with every run of characters other than [a-z0-9._] replaced by '-'."""
    return re.sub(r'[^a-z0-9._]+', '-', text.lower()).strip('-') or 'unknown'


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized TensorRT engine depends on.

    Attributes:
        onnx_sha256: hex sha256 of the ONNX file the engine is built from.
        trt_version: full TensorRT version string, e.g. '8.6.2.3' (plans are not portable
            across versions).
        gpu_name: CUDA device name, e.g. 'Orin'.
        compute_capability: e.g. '8.7' (plans are not portable across GPU architectures).
        dla_core: DLA core the engine runs on, or None for the GPU.
        precision: requested precision, one of PRECISIONS.
        input_shape: (H, W) in pixels of the optimisation profile / fixed input.
        sm_count: streaming multiprocessors of the GPU (tactics are timed for this count:
            a MIG slice or a binned part of the same name needs its own engine).
        recipe_sha256: sha256 of the build recipe's version (tensorrt_build.RECIPE_VERSION:
            flags, FP32 pinning, calibration preparation) and, for int8, of the calibration
            data.
    """

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    dla_core: int | None
    precision: str
    input_shape: tuple[int, int]
    sm_count: int = 0
    recipe_sha256: str = ''

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision {self.precision!r} is not one of {PRECISIONS}')
        height, width = self.input_shape
        if height < 1 or width < 1:
            raise ValueError(f'input_shape must be positive (H, W), got {self.input_shape}')

    def file_name(self, stem: str) -> str:
        """`<stem>.<sha12>.trt<ver>.<gpu>-sm<cc>[-dla<n>].<precision>.<H>x<W>.engine`."""
        device = f'{slug(self.gpu_name)}-sm{self.compute_capability.replace(".", "")}'
        if self.dla_core is not None:
            device += f'-dla{self.dla_core}'
        height, width = self.input_shape
        return (f'{slug(stem)}.{self.onnx_sha256[:12]}.trt{self.trt_version}.{device}.'
                f'{self.precision}.{height}x{width}.engine')

    def to_json(self) -> dict:
        """JSON-ready dict (input_shape as a list)."""
        data = asdict(self)
        data['input_shape'] = list(self.input_shape)
        return data


def parse_version(version: str) -> tuple[int, int, int]:
    """'8.6.2.3' -> (8, 6, 2); ValueError for text that is not a dotted version."""
    parts = version.split('.')
    if len(parts) < 2 or not all(part.isdigit() for part in parts):
        raise ValueError(f'not a dotted version number: {version!r}')
    numbers = [int(part) for part in parts] + [0]
    return numbers[0], numbers[1], numbers[2]


def plan_trt_version(plan: bytes) -> tuple[int, int, int] | None:
    """TensorRT (major, minor, patch) recorded in a plan's header, or None if unreadable."""
    if len(plan) < _PLAN_VERSION_OFFSET + 3:
        return None
    major, minor, patch = plan[_PLAN_VERSION_OFFSET:_PLAN_VERSION_OFFSET + 3]
    # Plausibility: TensorRT 8..99; anything else means the layout changed or the file is junk.
    return (major, minor, patch) if 8 <= major < 100 else None


@dataclass(frozen=True)
class CacheDecision:
    """What to do with the cache entry, and why (the sentence goes to the log)."""

    action: str   # 'load' or 'build'
    reason: str


def decide(engine_path: Path, key: EngineKey, force_rebuild: bool = False) -> CacheDecision:
    """Whether the cached engine at `engine_path` may be loaded for `key` (no deserialisation).

    Checks, in order: force_rebuild, engine file present, sidecar present and readable, the
    engine's sha256 as recorded (a replaced or damaged file), sidecar key equal to `key`.
    """
    if force_rebuild:
        return CacheDecision('build', 'force_rebuild is set')
    found, problem = read_sidecar(engine_path)
    if found is None:
        return CacheDecision('build', problem)
    mismatches = key_mismatches(found.get('key') or {}, key.to_json())
    if mismatches:
        return CacheDecision('build', 'sidecar does not match: ' + '; '.join(mismatches))
    return CacheDecision('load', f'cached engine {engine_path.name} matches the key')


@dataclass
class BuiltPlan:
    """What a build function returns: the plan bytes and facts for the sidecar."""

    plan: bytes
    precision_used: str
    details: dict = field(default_factory=dict)


@dataclass
class CacheResult:
    """How `resolve_engine` obtained the engine (for EngineInfo.details and the log)."""

    engine_path: Path
    action: str            # 'loaded' or 'built'
    reason: str
    precision_used: str
    build_time_s: float | None = None
    sidecar: dict = field(default_factory=dict)


EngineT = TypeVar('EngineT')


class _Resolver(Generic[EngineT]):
    """One load-or-build run; split into small steps so each logs its decision."""

    def __init__(self, key: EngineKey, engine_path: Path,
                 build: Callable[[], BuiltPlan], load: Callable[[bytes, dict], EngineT],
                 log: Callable[[str], None]) -> None:
        self.key, self.engine_path, self.build, self.load, self.log = (
            key, engine_path, build, load, log)

    def try_load_cached(self) -> tuple[EngineT, dict] | None:
        """Load the cached plan; None (logged) when it fails to deserialise or validate."""
        sidecar = json.loads(sidecar_path(self.engine_path).read_text(encoding='utf-8'))
        try:
            engine = self.load(self.engine_path.read_bytes(), sidecar)
        except EngineError as exc:
            self.log(f'cached engine {self.engine_path.name} is unusable ({exc}); rebuilding')
            return None
        return engine, sidecar

    def build_and_store(self) -> tuple[BuiltPlan, float, dict]:
        """Build the plan, then write engine and sidecar atomically (engine first). A cache
        folder that cannot be written (read-only on deployed robots) keeps the engine in
        memory only, with a warning: a multi-minute build is not thrown away."""
        started = time.monotonic()
        built = self.build()
        build_time = time.monotonic() - started
        header = plan_trt_version(built.plan)
        facts = dict(precision_used=built.precision_used, build_time_s=round(build_time, 2),
                     built_at=time.strftime('%Y-%m-%dT%H:%M:%S%z'),
                     plan_header_trt=list(header) if header else None, **built.details)
        try:
            sidecar = write_artifact(self.engine_path, built.plan, self.key.to_json(), **facts)
        except OSError as exc:
            self.log(f'warning: engine built in {build_time:.1f} s but it cannot be cached '
                     f'at {self.engine_path} ({exc}): it is kept in memory only and every '
                     'start builds it again; set a writable cache_dir to keep it')
            return built, build_time, {'key': self.key.to_json(), 'cached': False, **facts}
        self.log(f'engine built in {build_time:.1f} s ({built.precision_used}) and cached at '
                 f'{self.engine_path}')
        return built, build_time, sidecar


def resolve_engine(
    key: EngineKey,
    cache_dir: str | os.PathLike | None,
    stem: str,
    build: Callable[[], BuiltPlan],
    load: Callable[[bytes, dict], EngineT],
    log: Callable[[str], None] = _LOG.info,
    force_rebuild: bool = False,
) -> tuple[EngineT, CacheResult]:
    """Load the cached engine for `key`, or build, cache and load it.

    Args:
        key: what the engine must match.
        cache_dir: folder of the cache (None: `default_cache_dir()`); created if missing.
        stem: model name used in the file name (e.g. the ONNX file's stem).
        build: builds a plan (slow, minutes on a Jetson); raises EngineError on failure.
        load: deserialises and validates plan bytes (given the sidecar dict); raises
            EngineError if the plan is unusable, which triggers a rebuild.
        log: receives one line per decision.
        force_rebuild: ignore any cached engine.

    Returns:
        (engine, CacheResult); a fresh plan is always loaded: that is its validation.

    Raises:
        EngineError: the build fails, or a freshly built plan does not load.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    engine_path = folder / key.file_name(stem)
    resolver = _Resolver(key, engine_path, build, load, log)
    decision = decide(engine_path, key, force_rebuild)
    if decision.action == 'load':
        loaded = resolver.try_load_cached()
        if loaded is not None:
            engine, sidecar = loaded
            log(f'loaded cached engine {engine_path} without rebuilding ({decision.reason})')
            return engine, CacheResult(
                engine_path, 'loaded', decision.reason,
                sidecar.get('precision_used', key.precision), sidecar.get('build_time_s'),
                sidecar)
        reason = 'cached engine failed to deserialise or validate'
    else:
        reason = decision.reason
        log(f'building TensorRT engine {engine_path.name}: {reason}')
    built, build_time, sidecar = resolver.build_and_store()
    engine = load(built.plan, sidecar)
    return engine, CacheResult(engine_path, 'built', reason, built.precision_used, build_time,
                               sidecar)
