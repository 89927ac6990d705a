"""GPU check for occo_ros: PyTorch CUDA latency of FIFN at every width, precision and size,
fp16/bf16 agreement of the SHIPPED model, ONNX Runtime on the CPU as the reference, and the
TensorRT path where TensorRT and pycuda are installed. Run unattended through
bench/gpu_check.sh (no network needed); smoke-test on a CPU with `--device cpu --quick`.

Sections, most important first (each records its result, its error, or why it was skipped:
a missing TensorRT/pycuda/CUDA is a skip with the reason, never an error; a failing section
does not stop the rest; a section that would overrun the time budget is skipped and says so;
<out>/gpu_check.json and .md are rewritten after every section, so a kill keeps the rest):
    environment         Python / torch (CUDA?) / GPU / onnxruntime providers / TensorRT / pycuda
    tensorrt_shipped    the shipped models/fifn_w025_pixel.pt through the node's own path
                        (create_engine, backend tensorrt): fp32 and fp16 engines at 480x640 and
                        1080x1920. The lent GPU image has no TensorRT and no pycuda, cannot
                        download them, and their wheels with libraries are far larger than
                        the 64 MiB a call carries (pip's TensorRT 11.x is fp32-only in
                        occo_ros): there these sections say so and are skipped
    torch_shipped       the shipped checkpoint in PyTorch fp16 and bf16 vs fp32 at 480x640 and
                        1080p: max abs error, PSNR (pass >= 40 dB)
    tensorrt_w1.0       full-width FIFN (seeded random weights) fp16 at 480x640, with the
                        count of layers pinned to FP32 (from the engine's sidecar)
    torch_w1/0.5/0.25   PyTorch fp32/fp16/bf16 latency at 480x640, 720p and 1080p, eager and
                        CUDA graph replay (median and p99 from CUDA events)
    onnxruntime_cpu     ONNX Runtime on all CPU cores: the shipped model at the three sizes,
                        widths 0.5 and 1.0 at 480x640 (the reference the GPU is compared with)
    onnxruntime_cuda    CUDA execution provider latency, if onnxruntime-gpu is installed
    torch_compile_*     torch.compile per width and precision at the three sizes, without and
                        with CUDA graph replay; as many as the budget allows (fp16 first)
Agreement inputs: a real msrs pair (gpu_pack/data or ../shared/data), else smooth synthetic
images. Time budget: sections start only while --budget-s (default 400 s) lasts; the shell
wrapper kills the run before 9 minutes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import json
import math
import os
from pathlib import Path
import platform
import sys
import tempfile
import time
import traceback

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout: occo_ros beside bench/
PSNR_PASS_DB = 40.0
SHIPPED = REPO / 'models' / 'fifn_w025_pixel.pt'
SHIPPED_ONNX = REPO / 'models' / 'fifn_w025_pixel.onnx'
AGREEMENT_SIZES = ((480, 640), (1080, 1920))
LATENCY_SIZES = ((480, 640), (720, 1280), (1080, 1920))
WIDTHS = (1.0, 0.5, 0.25)
PAIR_FOLDERS = (REPO / 'gpu_pack' / 'data' / 'eval' / 'msrs',
                REPO.parent / 'shared' / 'data' / 'eval' / 'msrs')
TENSORRT_ABSENT = ('the lent GPU image has no TensorRT and no pycuda and cannot download them; '
                   'their wheels with libraries are far larger than the 64 MiB a device call '
                   "carries; pip's TensorRT 11.x is fp32-only in occo_ros (bench/gpu_check.sh "
                   'installs wheels carried in $WHEELHOUSE)')


class Skip(Exception):
    """A section cannot run on this machine; the message says why (not an error)."""


def write_results(results: dict, out: Path) -> None:
    """gpu_check.json and gpu_check.md, atomically (rewritten after every section)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (('gpu_check.json', json.dumps(results, indent=2, default=str)),
                       ('gpu_check.md', markdown(results))):
        temp = out / f'.{name}.tmp'
        temp.write_text(text, encoding='utf-8')
        temp.replace(out / name)


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class Budget:
    """Wall-clock budget shared by all sections."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def psnr(test: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of `test` against `reference`, both in [0, 1]; inf when identical."""
    mse = float(np.mean((test.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def test_pair(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(visible Y, infrared) float32 (1, 1, H, W): a real msrs pair resized, else synthetic."""
    try:
        import cv2
    except ImportError:
        cv2 = None
    for folder in PAIR_FOLDERS if cv2 is not None else ():
        try:
            name = sorted((folder / 'vi').iterdir())[0].name
            images = [cv2.resize(cv2.imread(str(folder / sub / name), cv2.IMREAD_GRAYSCALE),
                                 (size[1], size[0]), interpolation=cv2.INTER_AREA)
                      for sub in ('vi', 'ir')]
            return tuple(image.astype(np.float32)[None, None] / 255.0 for image in images)
        except (OSError, IndexError, AttributeError, cv2.error):
            continue
    y, x = np.mgrid[0:size[0], 0:size[1]].astype(np.float32)
    visible = 0.5 + 0.4 * np.sin(x / 37.0) * np.cos(y / 23.0)
    infrared = np.exp(-((x - size[1] / 2) ** 2 + (y - size[0] / 2) ** 2) / (size[0] ** 2))
    return visible[None, None], infrared.astype(np.float32)[None, None]


def summarise(values: list[float]) -> dict:
    return {'median_ms': round(float(np.median(values)), 3),
            'p99_ms': round(float(np.percentile(values, 99)), 3),
            'min_ms': round(float(np.min(values)), 3), 'runs': len(values)}


def time_ms(run: Callable[[], object], sync: Callable[[], None], warmup: int,
            runs: int) -> dict:
    """Median / p99 / min wall latency in ms of `run` (synchronised) after warmup."""
    for _ in range(warmup):
        run()
    sync()
    values = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        sync()
        values.append((time.perf_counter() - started) * 1000.0)
    return summarise(values)


def size_name(size: tuple[int, int]) -> str:
    return f'{size[0]}x{size[1]}'


class Check:
    """Runs the sections and collects results."""

    def __init__(self, args: argparse.Namespace) -> None:
        try:
            import torch
        except ImportError:
            torch = None
        self.torch = torch
        self.args = args
        self.cuda = args.device.startswith('cuda')
        self.torch_ready = torch is not None and (not self.cuda or torch.cuda.is_available())
        self.device = torch.device(args.device) if torch is not None else None
        self.budget = Budget(args.budget_s)
        self.sizes = ((48, 64), (72, 128)) if args.quick else LATENCY_SIZES
        self.agreement_sizes = ((48, 64), (72, 128)) if args.quick else AGREEMENT_SIZES
        self.widths = (0.25,) if args.quick else WIDTHS
        # bf16 and fp16 are timed on CUDA only (a CPU smoke test checks the plumbing).
        self.precisions = ('fp32', 'fp16', 'bf16') if self.cuda else ('fp32',)
        self.warmup, self.runs = (2, 5) if args.quick else (10, 100)
        self.results: dict = {'config': {
            'device': args.device, 'quick': args.quick, 'budget_s': args.budget_s,
            'sizes_hw': [list(size) for size in self.sizes], 'widths': list(self.widths),
            'precisions': list(self.precisions), 'timing': 'CUDA events (median, p99)'
            if self.cuda else 'perf_counter'}}
        self.workdir = Path(tempfile.mkdtemp(prefix='occo_gpu_check_'))
        self.checkpoints: dict[float, Path] = {}

    def need_torch(self) -> None:
        if self.torch is None:
            raise Skip('torch is not installed')
        if not self.torch_ready:
            raise Skip(f'torch {self.torch.__version__} has no CUDA (a CPU-only wheel?)')

    def need_tensorrt(self) -> None:
        missing = [name for name in ('tensorrt', 'pycuda') if not installed(name)]
        if missing:
            raise Skip(f'{" and ".join(missing)} not installed: {TENSORRT_ABSENT}')
        if not self.cuda:
            raise Skip(f'device {self.args.device}')

    def sync(self) -> None:
        if self.cuda and self.torch_ready:
            self.torch.cuda.synchronize()

    def section(self, name: str, needs_s: float, body: Callable[[], object],
                needs: Callable[[], None] = lambda: None) -> None:
        """Run one section if what it `needs` is here (else a Skip with the reason) and the
        budget allows; record its result or its error, then rewrite the JSON."""
        started = time.monotonic()
        try:
            needs()
            if self.budget.left() < needs_s:
                raise Skip(f'time budget: {self.budget.left():.0f} s left, section needs '
                           f'~{needs_s:.0f} s')
            self.results[name] = body()
        except Skip as exc:
            self.results[name] = {'skipped': str(exc)}
        except Exception as exc:  # record and go on: one broken backend is a finding
            self.results[name] = {'error': f'{type(exc).__name__}: {exc}',
                                  'traceback': traceback.format_exc(limit=4)}
        if isinstance(self.results[name], dict):
            self.results[name]['section_s'] = round(time.monotonic() - started, 1)
        print(f'[gpu_check] {name}: {json.dumps(self.results[name])[:300]}', flush=True)
        write_results(self.results, self.args.out)

    def checkpoint(self, width: float) -> Path:
        """A seeded random FIFN checkpoint of `width` (saved once)."""
        self.need_torch()
        if width not in self.checkpoints:
            from occo_ros.model.checkpoint import save_checkpoint
            from occo_ros.model.network import build_fifn

            self.torch.manual_seed(0)
            self.checkpoints[width] = save_checkpoint(
                self.workdir / f'fifn_w{width:g}.pt', build_fifn(width))
        return self.checkpoints[width]

    def dtype(self, precision: str):
        torch = self.torch
        return {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}[precision]

    def module(self, path: Path, precision: str):
        from occo_ros.model.checkpoint import load_checkpoint
        from occo_ros.model.network import InferenceFIFN

        self.need_torch()
        fifn, _ = load_checkpoint(path)
        return InferenceFIFN(fifn).to(self.device, self.dtype(precision)).eval()

    def inputs(self, size: tuple[int, int], precision: str):
        visible, infrared = test_pair(size)
        return tuple(self.torch.from_numpy(image).to(self.device, self.dtype(precision))
                     for image in (visible, infrared))

    def torch_fused(self, path: Path, precision: str, visible: np.ndarray,
                    infrared: np.ndarray) -> np.ndarray:
        torch = self.torch
        model = self.module(path, precision)
        dtype = self.dtype(precision)
        with torch.inference_mode():
            fused = model(torch.from_numpy(visible).to(self.device, dtype),
                          torch.from_numpy(infrared).to(self.device, dtype))
        return fused.float().cpu().numpy()

    def timed(self, run: Callable[[], object]) -> dict:
        """Latency of `run`: per-call CUDA events on CUDA, wall clock on the CPU."""
        if not self.cuda:
            return time_ms(run, self.sync, self.warmup, self.runs)
        torch = self.torch
        for _ in range(self.warmup):
            run()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(self.runs)]
        for start, end in events:
            start.record()
            run()
            end.record()
        torch.cuda.synchronize()
        return summarise([start.elapsed_time(end) for start, end in events])

    def graph_replay(self, run: Callable[[], object]) -> Callable[[], object]:
        """A captured CUDA graph of `run` (warmed up on a side stream first)."""
        torch = self.torch
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        return graph.replay

    def modes(self, forward: Callable[[], object]) -> dict:
        """{'eager' or 'compiled': timing, 'cuda_graph': timing of its graph replay}."""
        out = {'run': self.timed(forward)}
        if self.cuda:
            try:
                out['cuda_graph'] = self.timed(self.graph_replay(forward))
            except Exception as exc:  # a capture failure is a finding, the rest still counts
                out['cuda_graph'] = {'error': f'{type(exc).__name__}: {exc}'}
        return out

    # --- sections -------------------------------------------------------------------------

    def environment(self) -> dict:
        torch = self.torch
        info = {'python': platform.python_version(), 'cpu_count': os.cpu_count(),
                'torch': torch.__version__, 'cuda_available': torch.cuda.is_available()}
        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            major, minor = torch.cuda.get_device_capability(index)
            info.update(gpu=torch.cuda.get_device_name(index),
                        compute_capability=f'{major}.{minor}', cuda=torch.version.cuda,
                        cudnn=torch.backends.cudnn.version())
        for module in ('onnxruntime', 'tensorrt', 'pycuda', 'onnx'):
            try:
                imported = __import__(module)
                info[module] = getattr(imported, '__version__', 'installed')
            except ImportError as exc:
                info[module] = f'not installed ({exc})'
        if not installed('tensorrt') or not installed('pycuda'):
            info['tensorrt_rows'] = f'absent: {TENSORRT_ABSENT}'
        if 'not installed' not in str(info['onnxruntime']):
            import onnxruntime

            info['onnxruntime_providers'] = onnxruntime.get_available_providers()
        return info

    def torch_latency(self, width: float) -> dict:
        """Eager and CUDA-graph latency per size and precision (model in inference mode)."""
        self.need_torch()
        out: dict = {}
        for precision in self.precisions:
            model = self.module(self.checkpoint(width), precision)
            for size in self.sizes:
                vis, ir = self.inputs(size, precision)
                with self.torch.inference_mode():
                    timings = self.modes(lambda m=model, a=vis, b=ir: m(a, b))
                out.setdefault(size_name(size), {})[precision] = {
                    'eager': timings['run'], **{k: v for k, v in timings.items() if k != 'run'}}
        return out

    def torch_compile(self, width: float, precision: str) -> dict:
        """torch.compile (a fresh compile per size: static shapes) without and with graphs."""
        self.need_torch()
        torch = self.torch
        model = self.module(self.checkpoint(width), precision)
        out: dict = {'backend': self.args.compile_backend}
        for size in self.sizes:
            if self.budget.left() < 30:
                out[size_name(size)] = {'skipped': f'time budget: {self.budget.left():.0f} s'}
                continue
            torch._dynamo.reset()
            compiled = torch.compile(model, backend=self.args.compile_backend)
            vis, ir = self.inputs(size, precision)
            started = time.monotonic()
            with torch.inference_mode():
                compiled(vis, ir)
                self.sync()
                compile_s = round(time.monotonic() - started, 1)
                timings = self.modes(lambda c=compiled, a=vis, b=ir: c(a, b))
            out[size_name(size)] = {'compiled': {**timings['run'], 'compile_s': compile_s},
                                    **{k: v for k, v in timings.items() if k != 'run'}}
        return out

    def torch_shipped(self) -> dict:
        """The shipped checkpoint in fp16 and bf16 vs fp32 at the agreement sizes."""
        self.need_torch()
        if not self.cuda:
            raise Skip('fp16 and bf16 are checked on CUDA')
        out: dict = {}
        for size in self.agreement_sizes:
            visible, infrared = test_pair(size)
            reference = self.torch_fused(SHIPPED, 'fp32', visible, infrared)
            row = {}
            for precision in ('fp16', 'bf16'):
                fused = self.torch_fused(SHIPPED, precision, visible, infrared)
                value = psnr(fused, reference)
                finite = bool(np.isfinite(fused).all())
                row[precision] = {
                    'max_abs_error_vs_fp32': round(float(np.abs(fused - reference).max()), 5),
                    'psnr_db_vs_fp32': round(value, 2), 'finite': finite,
                    'pass': bool(value >= PSNR_PASS_DB and finite)}
            out[size_name(size)] = row
        return out

    def trt_engine(self, model: Path, precision: str, size: tuple[int, int]):
        """A TensorRT engine through the node's factory (EngineSpec -> create_engine)."""
        from occo_ros.engines import EngineSpec, create_engine

        spec = EngineSpec(backend='tensorrt', model_path=str(model), device='cuda',
                          precision=precision, input_size=size,
                          engine_cache_dir=str(self.workdir / 'cache'))
        started = time.monotonic()
        engine = create_engine(spec)
        return engine, time.monotonic() - started

    def tensorrt_shipped(self) -> dict:
        """Shipped model, TensorRT fp32 and fp16 at the agreement sizes."""
        self.need_tensorrt()
        from occo_ros.engines import EngineError

        out: dict = {}
        for size in self.agreement_sizes:
            visible, infrared = test_pair(size)
            fused, row = {}, {}
            for precision in ('fp32', 'fp16'):
                try:
                    engine, load_s = self.trt_engine(SHIPPED, precision, size)
                except EngineError as exc:
                    row[precision] = {'error': str(exc)}
                    continue
                fused[precision] = engine.infer(visible, infrared)
                timing = time_ms(lambda e=engine, v=visible, i=infrared: e.infer(v, i),
                                 lambda: None, self.warmup, self.runs)
                row[precision] = {'load_s': round(load_s, 1), 'cache': engine.info.details.get(
                    'cache'), 'precision_used': engine.info.precision, **timing}
                engine.close()
            if len(fused) == 2:
                value = psnr(fused['fp16'], fused['fp32'])
                row['fp16_vs_fp32_psnr_db'] = round(value, 2)
                row['fp16_max_abs_error_vs_fp32'] = round(
                    float(np.abs(fused['fp16'] - fused['fp32']).max()), 5)
                row['pass'] = bool(value >= PSNR_PASS_DB and np.isfinite(fused['fp16']).all())
            if self.torch_ready and fused:
                reference = self.torch_fused(SHIPPED, 'fp32', visible, infrared)
                row.update({f'{name}_vs_torch_fp32_psnr_db': round(psnr(array, reference), 2)
                            for name, array in fused.items()})
            out[size_name(size)] = row
        return out

    def tensorrt_full_width(self) -> dict:
        """Width 1.0, fp16, at 480x640: build, model time (infer incl. copies), pinned
        FP32 layers (recorded in the engine's sidecar, not in the engine info)."""
        self.need_tensorrt()
        from occo_ros.model.artifact_cache import read_sidecar

        checkpoint = self.checkpoint(1.0 if not self.args.quick else 0.25)
        size = self.sizes[0]
        visible, infrared = test_pair(size)
        engine, load_s = self.trt_engine(checkpoint, 'fp16', size)
        try:
            sidecar, problem = read_sidecar(Path(engine.info.details.get('engine_path', '')))
            return {'load_s': round(load_s, 1), 'precision_used': engine.info.precision,
                    'fp32_layers': sidecar.get('fp32_layers') if sidecar else
                    f'unknown: {problem}',
                    **time_ms(lambda: engine.infer(visible, infrared), lambda: None,
                              self.warmup, self.runs)}
        finally:
            engine.close()

    def onnxruntime_engine(self, model: Path, device: str, size: tuple[int, int]):
        from occo_ros.engines import EngineSpec, create_engine

        return create_engine(EngineSpec(
            backend='onnxruntime', model_path=str(model), device=device, input_size=size,
            engine_cache_dir=str(self.workdir / 'cache'), num_threads=os.cpu_count() or 1))

    def onnxruntime_cpu(self) -> dict:
        """The CPU reference: ONNX Runtime on every core (shipped dynamic export; the other
        widths exported from their seeded checkpoints at the first size)."""
        if not installed('onnxruntime'):
            raise Skip('onnxruntime not installed')
        runs = [(0.25, SHIPPED_ONNX, size) for size in self.sizes]
        runs += [(width, None, self.sizes[0]) for width in self.widths if width != 0.25]
        out: dict = {'threads': os.cpu_count()}
        for width, model, size in runs:
            if self.budget.left() < 20:
                out[f'w{width:g} {size_name(size)}'] = {'skipped': 'time budget'}
                continue
            engine = self.onnxruntime_engine(model or self.checkpoint(width), 'cpu', size)
            visible, infrared = test_pair(size)
            out[f'w{width:g} {size_name(size)}'] = time_ms(
                lambda e=engine, v=visible, i=infrared: e.infer(v, i), lambda: None,
                min(self.warmup, 3), min(self.runs, 20))
            engine.close()
        return out

    def onnxruntime_cuda(self) -> dict:
        if not installed('onnxruntime'):
            raise Skip('onnxruntime not installed')
        import onnxruntime

        if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
            raise Skip('onnxruntime-gpu not installed (providers '
                       f'{onnxruntime.get_available_providers()})')
        visible, infrared = test_pair(self.sizes[0])
        out = {}
        for width in self.widths:
            engine = self.onnxruntime_engine(self.checkpoint(width), 'cuda', self.sizes[0])
            out[f'w{width:g}'] = {'providers': engine.info.details.get('providers'),
                                  **time_ms(lambda e=engine: e.infer(visible, infrared),
                                            lambda: None, self.warmup, self.runs)}
            engine.close()
        return out

    def run(self) -> dict:
        """All sections, most important first, so a short budget drops the least useful."""
        self.section('environment', 0, self.environment)
        self.section('tensorrt_shipped', 150, self.tensorrt_shipped, self.need_tensorrt)
        self.section('torch_shipped', 20, self.torch_shipped, self.need_torch)
        self.section('tensorrt_w1.0', 60, self.tensorrt_full_width, self.need_tensorrt)
        for width in self.widths:
            self.section(f'torch_w{width:g}', 20, lambda w=width: self.torch_latency(w),
                         self.need_torch)
        self.section('onnxruntime_cpu', 30, self.onnxruntime_cpu)
        self.section('onnxruntime_cuda', 40, self.onnxruntime_cuda)
        # fp16 first (what a robot would run), the full and the deployed width first.
        order = sorted(self.widths, key=lambda w: (w != 1.0, w != 0.25))
        for precision in ('fp16', 'bf16', 'fp32'):
            if precision not in self.precisions:
                continue
            for width in order:
                self.section(f'torch_compile_w{width:g}_{precision}', 40,
                             lambda w=width, p=precision: self.torch_compile(w, p),
                             self.need_torch)
        return self.results


def timing_rows(prefix: str, value: object) -> list[tuple[str, dict]]:
    """(path, timing) of every nested dict that holds a median."""
    if not isinstance(value, dict):
        return []
    if 'median_ms' in value:
        return [(prefix, value)]
    return [row for key, child in value.items()
            for row in timing_rows(f'{prefix} {key}'.strip(), child)]


def markdown(results: dict) -> str:
    """A short markdown summary of the JSON results."""
    env = results.get('environment', {})
    lines = [f'GPU check: {env.get("gpu", "no GPU")} (cc {env.get("compute_capability", "-")}),'
             f' torch {env.get("torch")}, CUDA {env.get("cuda")}, onnxruntime '
             f'{env.get("onnxruntime")}, {env.get("cpu_count")} CPUs; timing '
             f'{results["config"]["timing"]}', '']
    if 'tensorrt_rows' in env:
        lines += [f'TensorRT rows {env["tensorrt_rows"]}', '']
    lines += ['| check | median ms | p99 ms | note |', '|---|---|---|---|']
    for name, section in results.items():
        if name in ('config', 'environment') or not isinstance(section, dict):
            continue
        if 'error' in section or 'skipped' in section:
            lines.append(f'| {name} | - | - | {section.get("error") or section["skipped"]} |')
            continue
        for path, value in timing_rows(name, section):
            note = ', '.join(f'{k} {v}' for k, v in value.items()
                             if k in ('precision_used', 'load_s', 'cache', 'fp32_layers',
                                      'compile_s'))
            lines.append(f'| {path} | {value["median_ms"]} | {value["p99_ms"]} | {note} |')
        extras = {k: v for k, v in section.items()
                  if k not in ('section_s', 'threads') and not timing_rows('', v)}
        if extras:
            lines.append(f'| {name} | - | - | {json.dumps(extras)} |')
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='FIFN GPU check (see module docstring).')
    parser.add_argument('--device', default='cuda', help="'cuda' (default) or 'cpu' (smoke test)")
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes, one width, few runs: a smoke test of the script')
    parser.add_argument('--out', type=Path, default=Path('out'),
                        help='folder for gpu_check.json and gpu_check.md (default ./out), '
                             'rewritten after every section')
    parser.add_argument('--budget-s', type=float, default=400.0,
                        help='stop starting sections after this many seconds (default 400)')
    parser.add_argument('--compile-backend', default='inductor',
                        help="torch.compile backend (default inductor; 'eager' checks the "
                             'plumbing on a CPU without a compiler run)')
    args = parser.parse_args(argv)
    results = Check(args).run()
    write_results(results, args.out)
    print(markdown(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
