"""``occo-eval``: score a fusion model (or a folder of fused images) and classical baselines.

For every pair ``--ir DIR/<stem>.*`` + ``--vi DIR/<stem>.*`` the fused luminance of each
method is scored with every metric of training.metrics (FUSION_METRICS.md conventions):

* ``--model PATH``: each pair goes through the ROS node's frame step
  (occo_ros.pipeline.FusionPipeline.fuse_frame, set up as occo-fuse does: the network at
  the pair's own size, visible Y = BT.601 luma / 255, infrared = 8-bit gray / 255), so the
  scores are those of what the node would publish; the network output (fused Y in [0,1])
  is rounded half up to 8 bits and scored. The fused Y is also written to
  ``OUT/fused/<name>/<stem>.png`` (``--fused`` on that folder reproduces the scores) and the
  frame step's colour image to ``OUT/color/<name>/<stem>.png``.
* ``--fused DIR``: already fused images ``DIR/<stem>.*`` (colour files become BT.601 luma).
* ``--baselines``: classical methods of training.baselines on the same pairs.

A pair is scored only when every method produced an image for it, so all means are over one
image set. Outputs in ``--out DIR``: metrics.csv (one row per image and method), summary.md
(mean per method, best in bold, conventions; with ``--model`` also the colour of the fused
image, see below), grid.png (a few pairs: IR | VI | methods), timings.json (seconds per
stage), with ``--model`` color.csv (training.metrics.color_stats per image). The Markdown is
printed at the end.

Colour (``--model``): the frame step's colour image against the visible one on the pixels
the infrared lifts (IR > visible luma + training.metrics.IR_LIFT): HSV saturation of both
and their ratio, mean hue shift; and Hasler-Suesstrunk colourfulness of whole images
(training.metrics.color_summary).

Work per 640x480 pair: inference ~0.45 CPU-s (width 0.25, torch, one thread), baselines
~0.15 s, metrics ~0.25 CPU-s per fused image (bench/bench_eval.py). By default everything
runs in this process; ``--workers N`` moves the metrics to N spawned processes, which pays
off only with free cores (e.g. with GPU inference): on the shared 2-core development
machine (about one core free) 40 MSRS pairs x 5 methods took 109 s with 1 worker and 126 s
with 2 (75 vs 86 CPU-s).
The output folder follows the tools' one output rule (occo_ros.util.output_safety): apart from the
inputs, new or empty unless ``--overwrite``, which replaces only what occo-eval wrote there.
Exit status: 0 done, 1 nothing could be evaluated, 2 bad arguments, an unusable model or a
refused output folder.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
import csv
from dataclasses import dataclass, field, replace
import json
import multiprocessing
from pathlib import Path
import statistics
import sys
import time

import cv2
import numpy as np
from tqdm import tqdm

from occo_ros.core.codec import DecodedImage
from occo_ros.core.color import DARK_LUMA
from occo_ros.engines import EngineError, EngineSpec, FusionEngine, create_engine
from occo_ros.io.image_pairs import (
    ImagePair,
    ImageReadError,
    bt601_luma,
    find_pairs,
    images_by_stem,
    read_gray,
    read_rgb,
)
from occo_ros.params import DefaultsHelpFormatter
from occo_ros.pipeline import image_pair_pipeline
from occo_ros.util.allocator import tune_allocator
from occo_ros.util.output_safety import OutputError, check_folder_output, prepare_output_folder

from .baselines import BASELINES
from .metrics import (
    IR_LIFT,
    LEGACY_DEVIATIONS,
    LEGACY_NOTES,
    METRICS,
    MIN_SIDE,
    color_stats,
    color_summary,
    evaluate_fusion,
    to_uint8,
)

# Issue 3's quality bar: beat each classical baseline on >= 5 of these 8 metrics (MI is left
# out on purpose: copying one source maximises it).
QUALITY_BAR = ('EN', 'SD', 'SF', 'AG', 'SCD', 'VIF', 'Qabf', 'SSIM')
QUALITY_BAR_WINS = 5
#: What occo-eval writes in --out (write_outputs, and run_evaluation's model images).
EVAL_OUTPUTS = ('metrics.csv', 'summary.md', 'grid.png', 'timings.json', 'fused', 'color',
                'color.csv')
GRID_PAIRS = 4            # pairs shown in grid.png
GRID_TILE_HEIGHT = 240    # tile height in grid.png, pixels (width keeps the aspect ratio)
GRID_LABEL_HEIGHT = 28    # label strip above each tile, pixels


#: The engine options occo-eval takes besides --model (node parameter names, occo_ros.params).
ENGINE_OPTIONS = ('backend', 'device', 'precision', 'num_threads', 'engine_cache_dir')
#: occo-eval's engine defaults: torch runs every image size; one inference thread leaves the
#: other cores to the metric processes (torch threads slow down a lot on busy cores).
ENGINE_DEFAULTS = EngineSpec(backend='torch', num_threads=1)


class ModelLoadError(RuntimeError):
    """The --model could not be loaded; the message names the file and the cause."""


@dataclass(frozen=True)
class EvalOptions:
    """One occo-eval run; exactly one of ``model`` and ``fused_dir`` is set."""

    ir_dir: Path
    vi_dir: Path
    out_dir: Path
    model: Path | None = None
    fused_dir: Path | None = None
    name: str | None = None                  # label of the model / fused method
    baselines: tuple[str, ...] = tuple(BASELINES)
    legacy: bool = False
    limit: int | None = None
    engine: EngineSpec = ENGINE_DEFAULTS     # backend, device, ...; run on ``model``
    workers: int = 1                         # metric processes (1: in this process)
    overwrite: bool = False                  # replace what occo-eval wrote in out_dir


@dataclass
class EvalResult:
    """Scores and bookkeeping of one run (what the output files are written from)."""

    methods: list[str]
    rows: list[dict] = field(default_factory=list)          # stem, method, metric values
    problems: list[str] = field(default_factory=list)       # one line per skipped pair
    unpaired: list[Path] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=dict)   # stage -> s per image
    grid: list[tuple[str, dict[str, np.ndarray]]] = field(default_factory=list)
    color: list[dict] = field(default_factory=list)         # stem + color_stats (--model)

    def record(self, stage: str, seconds: float) -> None:
        """Add one image's duration (seconds) to ``stage``."""
        self.timings.setdefault(stage, []).append(seconds)

    @property
    def evaluated(self) -> int:
        """Number of pairs scored by every method."""
        return len({row['stem'] for row in self.rows})


def fuse_pair(engine: FusionEngine, ir: np.ndarray, vi_rgb: np.ndarray,
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """Fuse a uint8 HxW infrared and HxWx3 RGB visible image by the node's frame step.

    Returns the network's fused Y rounded half up to uint8 HxW (the scored image), the
    frame step's fused colour image (BGR) and the inference seconds. Raises ValueError with
    the frame step's reason when the pair cannot be fused (bad pair, engine failure).
    """
    frame = image_pair_pipeline(engine, (ir.shape[1], ir.shape[0])).fuse_frame(
        ir, DecodedImage(vi_rgb, 'rgb'), encoding='bgr8')
    if not frame.ok:
        raise ValueError(frame.problems[0].message)
    return to_uint8(frame.fused_y), frame.pixels, frame.times_ms['inference'] / 1e3


def init_metric_process() -> None:
    """Metric process set-up: one OpenCV thread (the processes already fill the cores), and
    glibc keeps freed blocks (the metrics allocate many 2.4 MB float64 temporaries per
    640x480 image, whose page faults cost ~40 % of the metric time in a fresh process). A
    spawned process imports this module again (and occo-eval's script): no torch at import
    (test_evaluate checks)."""
    cv2.setNumThreads(1)
    tune_allocator()


def timed_scores(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray,
                 legacy: bool) -> tuple[dict[str, float], float]:
    """evaluate_fusion and its duration in seconds (runs in a metric process)."""
    start = time.perf_counter()
    scores = evaluate_fusion(ir, vi, fused, legacy)
    return scores, time.perf_counter() - start


def _warn(message: str) -> None:
    tqdm.write(f'occo-eval: {message}', file=sys.stderr)


class _FusedSource:
    """Where the evaluated (non-baseline) method's images come from: a model or a folder."""

    def __init__(self, options: EvalOptions) -> None:
        self.options = options
        self.engine = None
        self.files = images_by_stem(options.fused_dir) if options.fused_dir else {}

    def fused(self, stem: str, ir: np.ndarray, vi_rgb: np.ndarray,
              result: EvalResult) -> tuple[np.ndarray, np.ndarray | None]:
        """The method's fused luminance for one pair and, for a model, its colour image
        (BGR); raises ValueError/OSError to skip the pair."""
        if self.options.fused_dir is not None:
            if stem not in self.files:
                raise ValueError(f'no fused image for stem {stem!r} in '
                                 f'{self.options.fused_dir}')
            fused = read_gray(self.files[stem])
            if fused.shape != ir.shape:
                raise ValueError(f'{self.files[stem]} is {_size(fused)} but the sources are '
                                 f'{_size(ir)}')
            return fused, None
        if self.engine is None:
            self.engine = _create_engine(self.options, ir.shape)
        fused, color, seconds = fuse_pair(self.engine, ir, vi_rgb)
        result.record('inference', seconds)
        return fused, color


def _create_engine(options: EvalOptions, size: tuple[int, int]) -> FusionEngine:
    """Load the model for (H, W) inputs; raises ModelLoadError naming the model."""
    spec = options.engine
    try:
        return create_engine(replace(spec, model_path=str(options.model), input_size=size))
    except (OSError, ValueError, EngineError) as exc:
        raise ModelLoadError(f'cannot load model {options.model} (backend '
                             f'{spec.backend!r}, device {spec.device!r}): '
                             f'{type(exc).__name__}: {exc}') from exc


def _size(image: np.ndarray) -> str:
    return f'{image.shape[1]}x{image.shape[0]}'


def _read_pair(pair: ImagePair) -> tuple[np.ndarray, np.ndarray]:
    """uint8 IR gray and visible RGB of a pair; ValueError/OSError names the bad file."""
    ir = read_gray(pair.ir_path)
    vi = read_rgb(pair.vi_path)
    if ir.shape != vi.shape[:2]:
        raise ValueError(f'size mismatch: {pair.ir_path} is {_size(ir)} but {pair.vi_path} '
                         f'is {_size(vi)}')
    if min(ir.shape) < MIN_SIDE:
        raise ValueError(f'{pair.ir_path} is {_size(ir)}; the metrics need at least '
                         f'{MIN_SIDE}x{MIN_SIDE}')
    return ir, vi


def _save_model_images(out_dir: Path, label: str, stem: str, fused_y: np.ndarray,
                       color: np.ndarray) -> None:
    """fused/<label>/<stem>.png: the scored 8-bit Y; color/: the fused colour image."""
    cv2.imwrite(str(out_dir / 'fused' / label / f'{stem}.png'), fused_y)
    cv2.imwrite(str(out_dir / 'color' / label / f'{stem}.png'), color)


def method_label(options: EvalOptions) -> str:
    """Name of the model / fused-folder method in the tables."""
    if options.name:
        return options.name
    return options.model.stem if options.model is not None else options.fused_dir.name


def _inputs(options: EvalOptions) -> list[Path | None]:
    return [options.ir_dir, options.vi_dir, options.model, options.fused_dir]


def run_evaluation(options: EvalOptions, progress: bool = True) -> EvalResult:
    """Fuse and score every pair; unusable pairs are skipped and listed in ``problems``.

    Raises NotADirectoryError / ValueError for bad folders, ModelLoadError for a bad model,
    OutputError for an output folder the tools' output rule refuses (occo_ros.util.output_safety).
    """
    scan = find_pairs(options.ir_dir, options.vi_dir)
    prepare_output_folder(options.out_dir, 'occo-eval', EVAL_OUTPUTS, options.overwrite,
                          _inputs(options))
    source = _FusedSource(options)
    label = method_label(options)
    result = EvalResult(methods=[label, *options.baselines], unpaired=scan.unpaired)
    if scan.unpaired:
        _warn(f'{len(scan.unpaired)} image(s) without a partner, not evaluated: '
              + ', '.join(str(p) for p in scan.unpaired))
    pairs = scan.pairs[:options.limit] if options.limit else scan.pairs
    if options.model is not None:
        for kind in ('fused', 'color'):
            (options.out_dir / kind / label).mkdir(parents=True, exist_ok=True)

    # 'spawn': forking a process that may hold torch threads can deadlock the children.
    pool = (ProcessPoolExecutor(options.workers, multiprocessing.get_context('spawn'),
                                initializer=init_metric_process)
            if options.workers > 1 else None)
    pending: list[tuple[str, str, Future | tuple[dict[str, float], float]]] = []
    try:
        for pair in tqdm(pairs, desc='occo-eval', unit='pair', disable=not progress):
            try:
                ir, vi_rgb = _read_pair(pair)
                vi = bt601_luma(vi_rgb)
                fused, color = source.fused(pair.stem, ir, vi_rgb, result)
                images = {label: fused}
            except (OSError, ValueError, ImageReadError) as exc:
                result.problems.append(f'{pair.stem}: {exc}')
                _warn(f'skipped {pair.stem}: {exc}')
                continue
            if color is not None:
                _save_model_images(options.out_dir, label, pair.stem, fused, color)
                result.color.append({'stem': pair.stem, **color_stats(
                    ir, vi_rgb, cv2.cvtColor(color, cv2.COLOR_BGR2RGB))})
            for name in options.baselines:
                start = time.perf_counter()
                images[name] = BASELINES[name](ir, vi)
                result.record(f'baseline {name}', time.perf_counter() - start)
            for name, fused in images.items():
                job = (pool.submit(timed_scores, ir, vi, fused, options.legacy) if pool
                       else timed_scores(ir, vi, fused, options.legacy))
                pending.append((pair.stem, name, job))
            if len(result.grid) < GRID_PAIRS:
                result.grid.append((pair.stem, {'IR': ir, 'VI': vi_rgb, **images}))
        for stem, name, job in tqdm(pending, desc='metrics', unit='image',
                                    disable=not progress or pool is None):
            scores, seconds = job.result() if isinstance(job, Future) else job
            result.record(f'metrics {name}', seconds)
            result.rows.append({'stem': stem, 'method': name, **scores})
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return result


def mean_scores(result: EvalResult) -> dict[str, dict[str, float]]:
    """Mean of every metric per method (plain mean: a NaN image makes the mean NaN)."""
    means = {}
    for method in result.methods:
        rows = [row for row in result.rows if row['method'] == method]
        means[method] = {m: float(np.mean([row[m] for row in rows])) for m in METRICS}
    return means


def metrics_won(candidate: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """The QUALITY_BAR metrics on which `candidate` scores strictly better than `baseline`."""
    return [m for m in QUALITY_BAR if (candidate[m] > baseline[m]
                                       if METRICS[m].higher_is_better
                                       else candidate[m] < baseline[m])]


def quality_bar_lines(means: dict[str, dict[str, float]], method: str,
                      baselines: Sequence[str]) -> list[str]:
    """Markdown: on how many of the QUALITY_BAR metrics `method` beats each baseline."""
    if not baselines:
        return []
    won = {name: metrics_won(means[method], means[name]) for name in baselines}
    met = all(len(names) >= QUALITY_BAR_WINS for names in won.values())
    return ['', f'Quality bar (issue 3): {method} beats each baseline on at least '
            f'{QUALITY_BAR_WINS} of the {len(QUALITY_BAR)} metrics {", ".join(QUALITY_BAR)}: '
            + ('**met**' if met else '**not met**') + '.', '',
            '| baseline | metrics won | which |', '|---|---:|---|'] + [
        f'| {name} | {len(names)} | {", ".join(names) or "-"} |' for name, names in won.items()]


def color_lines(result: EvalResult) -> list[str]:
    """Markdown: the colour of the model's fused images (color_summary), or nothing."""
    if not result.color:
        return []
    c = color_summary(result.color)
    pixels = sum(row['lifted_px'] for row in result.color)
    return ['', f"Colour of {result.methods[0]} (the frame step's colour image, "
            f'{len(result.color)} pairs): on the {pixels:.0f} pixels the infrared lifts (IR > '
            f'visible luma + {IR_LIFT}), HSV saturation visible {c["sat_vi"]:.3f}, fused '
            f'{c["sat_fused"]:.3f}, ratio **{c["sat_ratio"]:.3f}** (on the '
            f'{100 * c["lit_share"]:.0f} % of them with visible luma >= {DARK_LUMA}, where '
            f'chroma is not noise: **{c["sat_ratio_lit"]:.3f}**), mean hue shift '
            f'**{c["hue_shift_deg"]:.2f}°**; colourfulness (Hasler-Suesstrunk, mean over '
            f'images) visible {c["colorfulness_vi"]:.2f}, fused {c["colorfulness_fused"]:.2f}.']


def _format(value: float) -> str:
    if not np.isfinite(value) or value == 0 or abs(value) >= 1e-3:
        return f'{value:.4f}'
    return f'{value:.3e}'


def markdown_summary(result: EvalResult, options: EvalOptions) -> str:
    """Mean per method as a Markdown table, best per column bold, conventions below."""
    means = mean_scores(result)
    header = ['method'] + [f'{m} {"↑" if info.higher_is_better else "↓"}'
                           for m, info in METRICS.items()]
    best = {}
    for metric, info in METRICS.items():
        values = [means[method][metric] for method in result.methods
                  if np.isfinite(means[method][metric])]
        if values:
            best[metric] = max(values) if info.higher_is_better else min(values)
    lines = [f'## occo-eval: {options.ir_dir.parent.name} ({result.evaluated} image pairs)', '',
             '| ' + ' | '.join(header) + ' |',
             '|---|' + '---:|' * len(METRICS)]
    for method in result.methods:
        cells = [method]
        for metric in METRICS:
            text = _format(means[method][metric])
            cells.append(f'**{text}**' if means[method][metric] == best.get(metric) else text)
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += quality_bar_lines(means, result.methods[0], options.baselines)
    lines += color_lines(result)
    lines += ['', f'Set: {options.ir_dir} + {options.vi_dir}; {result.evaluated} pairs scored '
              f'by every method ({len(result.problems)} skipped, {len(result.unpaired)} '
              'unpaired files). Means over images; per-image values in metrics.csv. '
              'A = infrared, B = visible BT.601 luma, F = fused luma, all 8-bit. '
              'SSIM/MS-SSIM are sums over the two sources (max 2).', '',
              'Conventions' + (' (legacy: TANG-legacy units where marked)' if options.legacy
                               else ' (FUSION_METRICS.md §2.3)') + ':']
    for metric, info in METRICS.items():
        text = info.convention
        if options.legacy and metric in LEGACY_DEVIATIONS:
            text = LEGACY_DEVIATIONS[metric]
        elif options.legacy and metric in LEGACY_NOTES:
            text = f'{text} (unchanged; {LEGACY_NOTES[metric]})'
        lines.append(f'- {metric}: {text}')
    return '\n'.join(lines) + '\n'


def write_csv(result: EvalResult, path: Path) -> None:
    """One row per image and method: stem, method, every metric (10 significant digits)."""
    with path.open('w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['stem', 'method', *METRICS])
        for row in result.rows:
            writer.writerow([row['stem'], row['method']]
                            + [f'{row[m]:.10g}' for m in METRICS])


def _tile(image: np.ndarray, label: str) -> np.ndarray:
    """BGR tile of GRID_TILE_HEIGHT with a label strip on top."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.ndim == 3 else cv2.COLOR_GRAY2BGR)
    width = max(1, round(image.shape[1] * GRID_TILE_HEIGHT / image.shape[0]))
    bgr = cv2.resize(bgr, (width, GRID_TILE_HEIGHT), interpolation=cv2.INTER_AREA)
    strip = np.zeros((GRID_LABEL_HEIGHT, width, 3), np.uint8)
    cv2.putText(strip, label, (4, GRID_LABEL_HEIGHT - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([strip, bgr])


def write_grid(result: EvalResult, path: Path) -> None:
    """IR | VI | every method, one row per pair of result.grid."""
    rows = [np.hstack([_tile(img, f'{stem} {name}' if name == 'IR' else name)
                       for name, img in images.items()])
            for stem, images in result.grid]
    width = max(row.shape[1] for row in rows)
    padded = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    cv2.imwrite(str(path), np.vstack(padded))


def timing_summary(result: EvalResult, total_seconds: float) -> dict:
    """Per-stage count, median, mean and total seconds, plus the wall-clock total."""
    stages = {stage: {'count': len(v), 'median_s': statistics.median(v),
                      'mean_s': statistics.fmean(v), 'total_s': sum(v)}
              for stage, v in result.timings.items()}
    return {'total_s': total_seconds, 'stages': stages}


def write_outputs(result: EvalResult, options: EvalOptions, total_seconds: float) -> str:
    """Write metrics.csv, summary.md, grid.png and timings.json; returns the Markdown."""
    options.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(result, options.out_dir / 'metrics.csv')
    if result.color:
        with (options.out_dir / 'color.csv').open('w', newline='') as handle:
            writer = csv.DictWriter(handle, list(result.color[0]))
            writer.writeheader()
            writer.writerows(result.color)
    summary = markdown_summary(result, options)
    (options.out_dir / 'summary.md').write_text(summary)
    write_grid(result, options.out_dir / 'grid.png')
    (options.out_dir / 'timings.json').write_text(
        json.dumps(timing_summary(result, total_seconds), indent=2) + '\n')
    return summary


def _baseline_list(text: str) -> tuple[str, ...]:
    if text.strip().lower() == 'none':
        return ()
    names = tuple(n.strip() for n in text.split(',') if n.strip())
    unknown = [n for n in names if n not in BASELINES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f'unknown baseline(s) {unknown or [text]}; choose from {", ".join(BASELINES)} '
            "(comma-separated) or 'none'")
    return names


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}')
    return value


def parse_args(argv: Sequence[str] | None) -> EvalOptions:
    """Command line -> EvalOptions (argparse exits with status 2 on bad arguments)."""
    parser = argparse.ArgumentParser(
        prog='occo-eval', formatter_class=DefaultsHelpFormatter,
        description='Score a fusion model or a folder of fused images against classical '
        'baselines with the standard fusion metrics (EN, SD, SF, AG, MI, SCD, CC, VIF, Qabf, '
        'Nabf, SSIM, MS-SSIM, MSE, PSNR; definitions in FUSION_METRICS.md).',
        epilog='Exit status: 0 done; 1 nothing could be evaluated; 2 bad arguments, an '
        'unusable model, or a refused --out (overlapping an input, not empty without '
        '--overwrite, or holding files occo-eval did not write).')
    parser.add_argument('--ir', required=True, type=Path,
                        help='folder of infrared images (8-bit; 3-channel files become luma)')
    parser.add_argument('--vi', required=True, type=Path,
                        help='folder of visible images with the same file stems as --ir')
    source = parser.add_argument_group(
        'what to evaluate', 'exactly one of --model (fused here by the chosen --backend) and '
        '--fused').add_mutually_exclusive_group(required=True)
    EngineSpec.add_arguments(source, ('model_path',), {'model_path': None})
    source.add_argument('--fused', type=Path,
                        help='folder of already fused images <stem>.* to evaluate instead of '
                        'a model')
    parser.add_argument('--out', required=True, type=Path,
                        help='output folder (created): metrics.csv, summary.md, grid.png, '
                        'timings.json; with --model also fused/<name>/ and color/<name>/')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace what an earlier occo-eval run wrote in --out (a folder '
                        'holding anything else is refused)')
    parser.add_argument('--name', default=None,
                        help='label of the evaluated method in the tables; None: the model '
                        'file stem or the fused folder name')
    parser.add_argument('--legacy', action='store_true',
                        help=f'TANG-legacy units for {", ".join(LEGACY_DEVIATIONS)} (to '
                        'compare with SeAFusion-era tables; see summary.md)')
    parser.add_argument('--baselines', type=_baseline_list, default=','.join(BASELINES),
                        help=f'comma-separated classical methods to score as well '
                        f'({", ".join(BASELINES)}) or none')
    parser.add_argument('--limit', type=_positive_int, default=None,
                        help='evaluate only the first N pairs (sorted by stem)')
    EngineSpec.add_arguments(parser.add_argument_group(
        'engine (with --model)', 'torch runs every image size; the other backends build a '
        'fixed-shape model for the first pair and skip pairs of another size. One inference '
        'thread by default leaves the other cores to the metric processes.'),
        ENGINE_OPTIONS, {name: value for name, value in ENGINE_DEFAULTS.to_params().items()
                         if name in ENGINE_OPTIONS})
    parser.add_argument('--workers', type=_positive_int, default=1,
                        help='processes computing the metrics; 1: in this process, N > 1: '
                        'N spawned processes (faster only when cores are free)')
    args = parser.parse_args(argv)
    try:
        engine = EngineSpec.from_args(args, ENGINE_DEFAULTS)
    except EngineError as exc:
        parser.error(str(exc))
    return EvalOptions(ir_dir=args.ir, vi_dir=args.vi, out_dir=args.out,
                       model=Path(args.model_path) if args.model_path else None,
                       fused_dir=args.fused, name=args.name, baselines=args.baselines,
                       legacy=args.legacy, limit=args.limit, engine=engine,
                       workers=args.workers, overwrite=args.overwrite)


def main(argv: list[str] | None = None) -> int:
    """occo-eval entry point: evaluate, write the outputs, print the Markdown table."""
    options = parse_args(argv)
    tune_allocator()
    label = method_label(options)
    if label in options.baselines:
        _warn(f'method name {label!r} is also a baseline; pass --name to tell them apart')
        return 2
    start = time.perf_counter()
    try:
        check_folder_output(options.out_dir, 'occo-eval', options.overwrite,
                            _inputs(options))   # before any slow work
        result = run_evaluation(options)
    except (NotADirectoryError, ValueError, ModelLoadError, OutputError) as exc:
        _warn(str(exc))
        return 2
    if not result.rows:
        _warn(f'nothing could be evaluated: {len(result.problems)} pair(s) skipped, '
              f'{len(result.unpaired)} unpaired file(s) in {options.ir_dir} / {options.vi_dir}')
        return 1
    if result.problems:
        _warn(f'{len(result.problems)} pair(s) skipped:\n  ' + '\n  '.join(result.problems))
    print(write_outputs(result, options, time.perf_counter() - start))
    return 0


if __name__ == '__main__':
    sys.exit(main())
