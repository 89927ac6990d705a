"""GPU check for occo_ros: FP16 agreement of the SHIPPED model through TensorRT and PyTorch,
latency of FIFN on CUDA, and the other backends where the machine has them. Run unattended
through bench/gpu_check.sh (no internet needed); smoke-test on a CPU with
`--device cpu --quick`.

Sections, most important first (each records its result, its error, or why it was skipped:
a missing TensorRT/pycuda/CUDA is a skip with the reason, never an error; a failing section
does not stop the rest; a section that would overrun the time budget is skipped and says so;
<out>/gpu_check.json and .md are rewritten after every section, so a kill keeps the rest):
    environment         Python / torch (CUDA?) / GPU / onnxruntime providers / TensorRT / pycuda
    tensorrt_shipped    the shipped models/fifn_w025_pixel.pt through the node's own path
                        (create_engine, backend tensorrt): fp32 and fp16 engines at 480x640 and
                        1080x1920: build/load time, latency, fp16-vs-fp32 PSNR (pass >= 40 dB)
                        and vs PyTorch fp32 where CUDA torch is installed
    torch_shipped       the shipped checkpoint in PyTorch fp16 vs fp32 at 480x640 and 1080p
    tensorrt_w1.0       full-width FIFN (seeded random weights) fp16 at 512x640: model time
                        (target <= 5 ms on an H100-class GPU); needs torch for the export
    torch_w1/0.5/0.25   PyTorch fp32/fp16 latency at 512x640 (eager and CUDA graph replay)
    onnxruntime_cuda    CUDA execution provider latency, if onnxruntime-gpu is installed
    torch_compile_w0.25 torch.compile latency
Agreement inputs: a real msrs pair when ../shared/data is present, else smooth synthetic
images. Time budget: sections start only while --budget-s (default 360 s) lasts; the shell
wrapper kills the run at 450 s, under 8 minutes in all.
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
sys.path.insert(0, str(REPO))  # run as a script from a checkout: occo_ros beside bench/
PSNR_PASS_DB = 40.0
SHIPPED = REPO / 'models' / 'fifn_w025_pixel.pt'
AGREEMENT_SIZES = ((480, 640), (1080, 1920))


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
        self.size = (64, 80) if args.quick else (512, 640)
        self.agreement_sizes = ((48, 64), (72, 128)) if args.quick else AGREEMENT_SIZES
        self.widths = (0.25,) if args.quick else (1.0, 0.5, 0.25)
        self.warmup, self.runs = (2, 5) if args.quick else (10, 50)
        self.results: dict = {'config': {'device': args.device, 'quick': args.quick,
                                         'size_hw': list(self.size), 'budget_s': args.budget_s}}
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
            raise Skip(f'{" and ".join(missing)} not installed (bench/gpu_check.sh installs '
                       'wheels carried in $WHEELHOUSE)')
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
            from occo_ros.checkpoint import save_checkpoint
            from occo_ros.model import build_fifn

            self.torch.manual_seed(0)
            self.checkpoints[width] = save_checkpoint(
                self.workdir / f'fifn_w{width:g}.pt', build_fifn(width))
        return self.checkpoints[width]

    def module(self, path: Path, half: bool):
        from occo_ros.checkpoint import load_checkpoint
        from occo_ros.model import InferenceFIFN

        self.need_torch()
        fifn, _ = load_checkpoint(path)
        model = InferenceFIFN(fifn).to(self.device).eval()
        return model.half() if half else model

    def torch_fused(self, path: Path, half: bool, visible: np.ndarray,
                    infrared: np.ndarray) -> np.ndarray:
        torch = self.torch
        model = self.module(path, half)
        dtype = torch.float16 if half else torch.float32
        with torch.inference_mode():
            fused = model(torch.from_numpy(visible).to(self.device, dtype),
                          torch.from_numpy(infrared).to(self.device, dtype))
        return fused.float().cpu().numpy()

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
        self.need_torch()
        torch = self.torch
        visible, infrared = test_pair(self.size)
        out: dict = {}
        outputs = {}
        precisions = ('fp32', 'fp16') if self.cuda else ('fp32',)
        for precision in precisions:
            half = precision == 'fp16'
            model = self.module(self.checkpoint(width), half)
            dtype = torch.float16 if half else torch.float32
            vis = torch.from_numpy(visible).to(self.device, dtype)
            ir = torch.from_numpy(infrared).to(self.device, dtype)
            with torch.inference_mode():
                out[f'{precision}_eager'] = time_ms(lambda m=model, a=vis, b=ir: m(a, b),
                                                    self.sync, self.warmup, self.runs)
                outputs[precision] = model(vis, ir).float().cpu().numpy()
            if self.cuda:
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
        self.need_torch()
        torch = self.torch
        model = self.module(self.checkpoint(width), half=self.cuda)
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

    def torch_shipped(self) -> dict:
        """The shipped checkpoint in PyTorch fp16 vs fp32 at the agreement sizes."""
        self.need_torch()
        if not self.cuda:
            raise Skip('fp16 needs CUDA')
        out = {}
        for size in self.agreement_sizes:
            visible, infrared = test_pair(size)
            fp32, fp16 = (self.torch_fused(SHIPPED, half, visible, infrared)
                          for half in (False, True))
            value = psnr(fp16, fp32)
            out[f'{size[0]}x{size[1]}'] = {
                'fp16_vs_fp32_psnr_db': round(value, 2), 'fp16_finite': bool(
                    np.isfinite(fp16).all()),
                'pass': bool(value >= PSNR_PASS_DB and np.isfinite(fp16).all())}
        return out

    def trt_engine(self, model: Path, precision: str, size: tuple[int, int]):
        """A TensorRT engine through the node's factory (EngineSpec -> create_engine)."""
        from occo_ros.engines import EngineSpec, create_engine

        spec = EngineSpec(backend='tensorrt', model_path=str(model), device='cuda',
                          precision=precision, input_size=size,
                          cache_dir=str(self.workdir / 'cache'))
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
                row['pass'] = bool(value >= PSNR_PASS_DB and np.isfinite(fused['fp16']).all())
            if self.torch_ready and fused:
                reference = self.torch_fused(SHIPPED, False, visible, infrared)
                row.update({f'{name}_vs_torch_fp32_psnr_db': round(psnr(array, reference), 2)
                            for name, array in fused.items()})
            out[f'{size[0]}x{size[1]}'] = row
        return out

    def tensorrt_full_width(self) -> dict:
        """Width 1.0, fp16, at 512x640: build, model time (infer incl. copies)."""
        self.need_tensorrt()
        checkpoint = self.checkpoint(1.0 if not self.args.quick else 0.25)
        visible, infrared = test_pair(self.size)
        engine, load_s = self.trt_engine(checkpoint, 'fp16', self.size)
        try:
            return {'load_s': round(load_s, 1), 'precision_used': engine.info.precision,
                    'fp32_layers': engine.info.details.get('fp32_layers'),
                    **time_ms(lambda: engine.infer(visible, infrared), lambda: None,
                              self.warmup, self.runs)}
        finally:
            engine.close()

    def onnxruntime(self) -> dict:
        if not installed('onnxruntime'):
            raise Skip('onnxruntime not installed')
        import onnxruntime

        if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
            raise Skip('onnxruntime-gpu not installed (providers '
                       f'{onnxruntime.get_available_providers()})')
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

    def run(self) -> dict:
        """All sections, most important first, so a short budget drops the least useful."""
        self.section('environment', 0, self.environment)
        self.section('tensorrt_shipped', 150, self.tensorrt_shipped, self.need_tensorrt)
        self.section('torch_shipped', 20, self.torch_shipped, self.need_torch)
        self.section('tensorrt_w1.0', 60, self.tensorrt_full_width, self.need_tensorrt)
        for width in self.widths:
            self.section(f'torch_w{width:g}', 20, lambda w=width: self.torch_latency(w),
                         self.need_torch)
        self.section('onnxruntime_cuda', 40, self.onnxruntime)
        if not self.args.quick:
            self.section('torch_compile_w0.25', 90, lambda: self.torch_compile(0.25),
                         self.need_torch)
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
                             if k in ('precision_used', 'load_s', 'cache', 'compile_s'))
            lines.append(f'| {name} {key} | {value["median_ms"]} | {value["p90_ms"]} | '
                         f'{note} |')
        extras = {k: v for k, v in section.items()
                  if k.startswith(('fp16_', 'pass', 'size')) or k[:1].isdigit()}
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
    parser.add_argument('--budget-s', type=float, default=360.0,
                        help='stop starting sections after this many seconds (default 360)')
    args = parser.parse_args(argv)
    results = Check(args).run()
    write_results(results, args.out)
    print(markdown(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
