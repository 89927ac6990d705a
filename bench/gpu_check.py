"""GPU check for occo_ros: latency and FP16 safety of FIFN on CUDA, plus the other backends
where that machine has them. Run through bench/gpu_check.sh; smoke-test on a CPU with
`--device cpu --quick`.

Sections (each records its result or its error; a failing section does not stop the rest,
and a section that would overrun the time budget is skipped and says so):
    environment   torch / CUDA / GPU / onnxruntime providers / TensorRT / pycuda versions
    torch         widths 1.0, 0.5, 0.25 at 512x640: fp32 and fp16 latency (eager and CUDA
                  graph replay), fp16-vs-fp32 PSNR (pass >= 40 dB); torch.compile for one width
    overflow      width 1.0 fp16 vs fp32 at 1080x1920 (the attention-context FP16 risk,
                  OCCO_METHOD.md §2): PSNR and non-finite check
    onnxruntime   CUDA execution provider latency, if onnxruntime-gpu is installed
    tensorrt      fp32 and fp16 engines through the engine cache (build time, second start
                  loads from cache, latency incl. copies, fp16 PSNR vs PyTorch fp32)
Weights are seeded random (latency does not depend on them; agreement is checked on a real
msrs pair when ../shared/data is present, else on smooth synthetic images).

Writes <out>/gpu_check.json and <out>/gpu_check.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import json
import math
from pathlib import Path
import platform
import sys
import tempfile
import time
import traceback

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PSNR_PASS_DB = 40.0


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
    folder = REPO.parent / 'shared' / 'data' / 'eval' / 'msrs'
    try:
        import cv2

        name = sorted((folder / 'vi').iterdir())[0].name
        images = [cv2.resize(cv2.imread(str(folder / sub / name), cv2.IMREAD_GRAYSCALE),
                             (size[1], size[0]), interpolation=cv2.INTER_AREA)
                  for sub in ('vi', 'ir')]
        return tuple(image.astype(np.float32)[None, None] / 255.0 for image in images)
    except (ImportError, OSError, IndexError, AttributeError):
        y, x = np.mgrid[0:size[0], 0:size[1]].astype(np.float32)
        visible = 0.5 + 0.4 * np.sin(x / 37.0) * np.cos(y / 23.0)
        infrared = np.exp(-((x - size[1] / 2) ** 2 + (y - size[0] / 2) ** 2) / (size[0] ** 2))
        return visible[None, None], infrared.astype(np.float32)[None, None]


def time_ms(run: Callable[[], object], sync: Callable[[], None], warmup: int,
            runs: int) -> dict:
    """Median / p90 / min latency in ms of `run` (synchronised) over `runs` after warmup."""
    for _ in range(warmup):
        run()
    sync()
    values = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        sync()
        values.append((time.perf_counter() - started) * 1000.0)
    return {'median_ms': round(float(np.median(values)), 3),
            'p90_ms': round(float(np.percentile(values, 90)), 3),
            'min_ms': round(float(np.min(values)), 3), 'runs': runs}


class Check:
    """Runs the sections and collects results."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.torch = torch
        self.args = args
        self.device = torch.device(args.device)
        self.budget = Budget(args.budget_s)
        self.size = (64, 80) if args.quick else (512, 640)
        self.widths = (0.25,) if args.quick else (1.0, 0.5, 0.25)
        self.warmup, self.runs = (2, 5) if args.quick else (10, 50)
        self.results: dict = {'config': {'device': args.device, 'quick': args.quick,
                                         'size_hw': list(self.size), 'budget_s': args.budget_s}}
        self.workdir = Path(tempfile.mkdtemp(prefix='occo_gpu_check_'))
        self.checkpoints: dict[float, Path] = {}

    def sync(self) -> None:
        if self.device.type == 'cuda':
            self.torch.cuda.synchronize()

    def section(self, name: str, needs_s: float, body: Callable[[], object]) -> None:
        """Run one section if the budget allows; record its result or its error."""
        if self.budget.left() < needs_s:
            self.results[name] = {'skipped': f'time budget: {self.budget.left():.0f} s left, '
                                             f'section needs ~{needs_s:.0f} s'}
        else:
            started = time.monotonic()
            try:
                self.results[name] = body()
            except Exception as exc:  # record and go on: one broken backend is a finding
                self.results[name] = {'error': f'{type(exc).__name__}: {exc}',
                                      'traceback': traceback.format_exc(limit=4)}
            if isinstance(self.results[name], dict):
                self.results[name]['section_s'] = round(time.monotonic() - started, 1)
        print(f'[gpu_check] {name}: {json.dumps(self.results[name])[:300]}', flush=True)

    def checkpoint(self, width: float) -> Path:
        """A seeded random FIFN checkpoint of `width` (saved once)."""
        if width not in self.checkpoints:
            from occo_ros.checkpoint import save_checkpoint
            from occo_ros.model import build_fifn

            self.torch.manual_seed(0)
            self.checkpoints[width] = save_checkpoint(
                self.workdir / f'fifn_w{width:g}.pt', build_fifn(width))
        return self.checkpoints[width]

    def module(self, width: float, half: bool):
        from occo_ros.checkpoint import load_checkpoint
        from occo_ros.model import InferenceFIFN

        fifn, _ = load_checkpoint(self.checkpoint(width))
        model = InferenceFIFN(fifn).to(self.device).eval()
        return model.half() if half else model

    # --- sections -------------------------------------------------------------------------

    def environment(self) -> dict:
        torch = self.torch
        info = {'python': platform.python_version(), 'torch': torch.__version__,
                'cuda_available': torch.cuda.is_available()}
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
        if 'not installed' not in str(info['onnxruntime']):
            import onnxruntime

            info['onnxruntime_providers'] = onnxruntime.get_available_providers()
        return info

    def torch_latency(self, width: float) -> dict:
        torch = self.torch
        visible, infrared = test_pair(self.size)
        out: dict = {}
        outputs = {}
        precisions = ('fp32', 'fp16') if self.device.type == 'cuda' else ('fp32',)
        for precision in precisions:
            half = precision == 'fp16'
            model = self.module(width, half)
            dtype = torch.float16 if half else torch.float32
            vis = torch.from_numpy(visible).to(self.device, dtype)
            ir = torch.from_numpy(infrared).to(self.device, dtype)
            with torch.inference_mode():
                out[f'{precision}_eager'] = time_ms(lambda m=model, a=vis, b=ir: m(a, b),
                                                    self.sync, self.warmup, self.runs)
                outputs[precision] = model(vis, ir).float().cpu().numpy()
            if self.device.type == 'cuda':
                out[f'{precision}_cuda_graph'] = self.graph_latency(model, vis, ir)
        if 'fp16' in outputs:
            value = psnr(outputs['fp16'], outputs['fp32'])
            out['fp16_vs_fp32_psnr_db'] = round(value, 2)
            out['fp16_pass'] = bool(value >= PSNR_PASS_DB and np.isfinite(outputs['fp16']).all())
        return out

    def graph_latency(self, model, vis, ir) -> dict:
        """Latency of replaying a captured CUDA graph of the forward pass."""
        torch = self.torch
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm up on a side stream before capture
                model(vis, ir)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            model(vis, ir)
        return time_ms(graph.replay, self.sync, self.warmup, self.runs)

    def torch_compile(self, width: float) -> dict:
        torch = self.torch
        model = self.module(width, half=self.device.type == 'cuda')
        dtype = next(model.parameters()).dtype
        visible, infrared = test_pair(self.size)
        vis = torch.from_numpy(visible).to(self.device, dtype)
        ir = torch.from_numpy(infrared).to(self.device, dtype)
        started = time.monotonic()
        compiled = torch.compile(model)
        with torch.inference_mode():
            compiled(vis, ir)
            self.sync()
            compile_s = time.monotonic() - started
            result = time_ms(lambda: compiled(vis, ir), self.sync, self.warmup, self.runs)
        return {'precision': str(dtype), 'compile_s': round(compile_s, 1), **result}

    def overflow(self) -> dict:
        torch = self.torch
        size = (72, 128) if self.args.quick else (1080, 1920)
        visible, infrared = test_pair(size)
        outputs = {}
        for half in (False, True):
            model = self.module(1.0 if not self.args.quick else 0.25, half)
            dtype = torch.float16 if half else torch.float32
            with torch.inference_mode():
                outputs[half] = model(torch.from_numpy(visible).to(self.device, dtype),
                                      torch.from_numpy(infrared).to(self.device, dtype)
                                      ).float().cpu().numpy()
            del model
        value = psnr(outputs[True], outputs[False])
        return {'size_hw': list(size), 'fp16_vs_fp32_psnr_db': round(value, 2),
                'fp16_finite': bool(np.isfinite(outputs[True]).all()),
                'pass': bool(value >= PSNR_PASS_DB and np.isfinite(outputs[True]).all())}

    def onnxruntime(self) -> dict:
        import onnxruntime

        if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
            return {'skipped': 'onnxruntime-gpu not installed (providers '
                               f'{onnxruntime.get_available_providers()})'}
        from occo_ros.engines import EngineSpec, create_engine

        visible, infrared = test_pair(self.size)
        out = {}
        for width in self.widths:
            engine = create_engine(EngineSpec(
                backend='onnxruntime', model_path=str(self.checkpoint(width)), device='cuda',
                input_size=self.size, cache_dir=str(self.workdir / 'cache')))
            out[f'w{width:g}'] = {'providers': engine.info.details.get('providers'),
                                  **time_ms(lambda e=engine: e.infer(visible, infrared),
                                            lambda: None, self.warmup, self.runs)}
            engine.close()
        return out

    def tensorrt(self) -> dict:
        from occo_ros.engines import tensorrt_engine
        from occo_ros.export import cached_onnx

        tensorrt_engine.import_tensorrt()
        tensorrt_engine.import_pycuda_driver()
        visible, infrared = test_pair(self.size)
        cache = self.workdir / 'cache'
        out = {}
        for width in (0.25, 1.0):
            if self.budget.left() < 150:
                out[f'w{width:g}'] = {'skipped': 'time budget'}
                continue
            onnx_path = cached_onnx(self.checkpoint(width), cache, self.size,
                                    log=lambda line: None)
            reference = self.module(width, half=False)
            with self.torch.inference_mode():
                expected = reference(*(self.torch.from_numpy(array).to(self.device)
                                       for array in (visible, infrared))).cpu().numpy()
            for precision in ('fp32', 'fp16'):
                lines: list[str] = []
                engine, built = tensorrt_engine.load_or_build(
                    onnx_path, self.size, precision, 'cuda', cache, log=lines.append)
                fused = engine.infer(visible, infrared)
                timing = time_ms(lambda e=engine: e.infer(visible, infrared), lambda: None,
                                 self.warmup, self.runs)
                engine.close()
                second, reloaded = tensorrt_engine.load_or_build(
                    onnx_path, self.size, precision, 'cuda', cache, log=lines.append)
                second.close()
                out[f'w{width:g}_{precision}'] = {
                    'build_s': built.build_time_s, 'precision_used': built.precision_used,
                    'fp32_layers': built.sidecar.get('fp32_layers'),
                    'second_start': reloaded.action, 'psnr_vs_torch_fp32_db':
                        round(psnr(fused, expected), 2), **timing,
                    'log_tail': lines[-3:]}
        return out

    def run(self) -> dict:
        """All sections, most important first, so a short budget drops the least useful."""
        self.section('environment', 0, self.environment)
        for width in self.widths:
            self.section(f'torch_w{width:g}', 20, lambda w=width: self.torch_latency(w))
        self.section('overflow_1080p', 30, self.overflow)
        if self.device.type == 'cuda':
            self.section('tensorrt', 150, self.tensorrt)
            self.section('onnxruntime_cuda', 60, self.onnxruntime)
            if not self.args.quick:
                self.section('torch_compile_w0.25', 120, lambda: self.torch_compile(0.25))
        else:
            for name in ('tensorrt', 'onnxruntime_cuda'):
                self.results[name] = {'skipped': f'device {self.args.device}'}
        return self.results


def markdown(results: dict) -> str:
    """A short markdown summary of the JSON results."""
    env = results.get('environment', {})
    lines = [f'GPU check: {env.get("gpu", "no GPU")} (cc {env.get("compute_capability", "-")}),'
             f' torch {env.get("torch")}, CUDA {env.get("cuda")}, TensorRT '
             f'{env.get("tensorrt")}, onnxruntime {env.get("onnxruntime")}; input '
             f'{results["config"]["size_hw"][0]}x{results["config"]["size_hw"][1]} (HxW)', '',
             '| check | median ms | p90 ms | note |', '|---|---|---|---|']
    for name, section in results.items():
        if name in ('config', 'environment') or not isinstance(section, dict):
            continue
        if 'error' in section or 'skipped' in section:
            lines.append(f'| {name} | - | - | {section.get("error") or section["skipped"]} |')
            continue
        rows = {key: value for key, value in section.items()
                if isinstance(value, dict) and 'median_ms' in value}
        if 'median_ms' in section:
            rows = {'': section}
        for key, value in rows.items():
            note = ', '.join(f'{k} {v}' for k, v in value.items()
                             if k in ('precision_used', 'build_s', 'second_start',
                                      'psnr_vs_torch_fp32_db', 'compile_s'))
            lines.append(f'| {name} {key} | {value["median_ms"]} | {value["p90_ms"]} | '
                         f'{note} |')
        extras = {k: v for k, v in section.items() if k.startswith(('fp16_', 'pass', 'size'))}
        if extras:
            lines.append(f'| {name} | - | - | {json.dumps(extras)} |')
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='FIFN GPU check (see module docstring).')
    parser.add_argument('--device', default='cuda', help="'cuda' (default) or 'cpu' (smoke test)")
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes, one width, few runs: a smoke test of the script')
    parser.add_argument('--out', type=Path, default=Path('out'),
                        help='folder for gpu_check.json and gpu_check.md (default ./out)')
    parser.add_argument('--budget-s', type=float, default=300.0,
                        help='stop starting sections after this many seconds (default 300)')
    args = parser.parse_args(argv)
    results = Check(args).run()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'gpu_check.json').write_text(json.dumps(results, indent=2, default=str),
                                             encoding='utf-8')
    summary = markdown(results)
    (args.out / 'gpu_check.md').write_text(summary, encoding='utf-8')
    print(summary)
    return 0


if __name__ == '__main__':
    sys.exit(main())
