"""One prepared training call for a lent GPU (bench/gpu_train.sh runs it; OCCO_METHOD.md §3-4).

Trains, at the same time on the one GPU, with the full OCCO objective (L_pixel + L_con with
the HED VGG16 features and the object masks carried in gpu_pack/):
  * width 1.0 FIFN (the paper's network) from scratch, and
  * width 0.25 continued from the shipped models/fifn_w025_pixel.pt (the deployable one),
both at the published settings (256 crops, batch 12, Adam lr 1e-4, no schedule, at most 30
epochs) for as many epochs as --minutes allows (the log and the summary say how many).
Meanwhile the shipped model is evaluated; then both new models are, with occo-eval on both
eval sets, and bench/bench_optimum_ratio.py compares each with the L_pixel optimum table
(bench/results/objective_ceiling.json) and the shipped model.

Writes to --out after every step (the device brings back <= 8 files):
  gpu_train.json   steps done, epochs per run, mean metrics per model and set, ratio exits
  gpu_train.md     the same as text plus the ratio tables
  gpu_train.log    the pack check, both training logs, the evaluations
  fifn_w100_full.pt, fifn_w025_full.pt   lean checkpoints (best validation score)
Everything else (run folders, fused images) stays in --scratch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout: occo_ros beside bench/

from gpu_pack import GPU_TRAIN_OUTPUTS, PackError, verify  # noqa: E402

SHIPPED = REPO / 'models' / 'fifn_w025_pixel.pt'
SETS = ('msrs', 'roadscene')
# (tag, width, extra occo-train options): the paper's network and the deployable one.
RUNS = (('w100', 1.0, ('--width', '1.0')), ('w025', 0.25, ('--init-from', str(SHIPPED))))


class Summary:
    """gpu_train.json / .md / .log in --out, rewritten after every step."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.data: dict = {'steps': []}
        self.tables: list[str] = []
        out.mkdir(parents=True, exist_ok=True)
        (out / 'gpu_train.log').write_text('', encoding='utf-8')

    def log(self, text: str) -> None:
        print(text, flush=True)
        with (self.out / 'gpu_train.log').open('a', encoding='utf-8') as handle:
            handle.write(text.rstrip('\n') + '\n')

    def step(self, name: str, started: float, **facts: object) -> None:
        self.data['steps'].append({'step': name, 'seconds': round(time.monotonic() - started, 1),
                                   **facts})
        self.write()

    def write(self) -> None:
        lines = ['# gpu_train', '', '```', json.dumps(self.data, indent=1), '```', '',
                 *self.tables]
        for name, text in (('gpu_train.json', json.dumps(self.data, indent=1)),
                           ('gpu_train.md', '\n'.join(lines) + '\n')):
            temp = self.out / f'.{name}.tmp'
            temp.write_text(text, encoding='utf-8')
            temp.replace(self.out / name)


def train_command(args: argparse.Namespace, pack: Path, hed: Path, tag: str,
                  options: tuple[str, ...]) -> list[str]:
    data = pack / 'data' / 'train'
    return [args.python, '-m', 'training.train',
            '--train-roots', *(str(data / name) for name in SETS),
            '--mask-roots', *(str(pack / 'masks' / name) for name in SETS),
            '--eval-root', str(data / 'msrs'), '--val-pairs', str(args.val_pairs),
            '--loss', 'full', '--vgg-weights', str(hed), *options,
            '--crop', str(args.crop), '--batch-size', str(args.batch_size), '--lr', '1e-4',
            '--lr-schedule', 'constant', '--epochs', str(args.epochs),
            '--max-steps', str(args.max_steps), '--max-minutes', str(args.minutes),
            '--workers', str(args.workers), '--device', args.device,
            '--out-dir', str(args.scratch / f'train_{tag}'),
            '--export-path', str(args.scratch / f'fifn_{tag}_full.pt')]


def eval_command(args: argparse.Namespace, pack: Path, model: Path, folder: Path,
                 name: str) -> list[str]:
    data = pack / 'data' / 'eval' / name
    return [args.python, '-m', 'training.evaluate', '--ir', str(data / 'ir'),
            '--vi', str(data / 'vi'), '--model', str(model), '--baselines', 'none',
            '--out', str(folder), '--device', args.device, '--workers', str(args.workers),
            '--limit', str(args.eval_limit)]


def run_logged(summary: Summary, command: list[str], timeout: float) -> int:
    """Run `command` to the end (or `timeout`), its output appended to the log."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        summary.log(f'$ {" ".join(command)}\n{exc.stdout or ""}{exc.stderr or ""}'
                    f'[killed after {timeout:.0f} s]')
        return 124
    summary.log(f'$ {" ".join(command)}\n{done.stdout}{done.stderr}[exit {done.returncode}]')
    return done.returncode


def evaluate(summary: Summary, args: argparse.Namespace, pack: Path, model: Path,
             tag: str) -> dict:
    """occo-eval on both sets: {set: {metric: mean}} (the folders stay in --scratch)."""
    from training.evaluate import QUALITY_BAR

    means = {}
    for name in SETS:
        folder = args.scratch / f'eval_{tag}_{name}'
        status = run_logged(summary, eval_command(args, pack, model, folder, name),
                            args.eval_timeout)
        csv_path = folder / 'metrics.csv'
        if status or not csv_path.is_file():
            means[name] = {'error': f'occo-eval exit {status}'}
            continue
        with csv_path.open(newline='') as handle:
            rows = list(csv.DictReader(handle))
        means[name] = {metric: round(sum(float(row[metric]) for row in rows) / len(rows), 4)
                       for metric in QUALITY_BAR}
        means[name]['pairs'] = len(rows)
    return means


def epochs_done(run_dir: Path) -> dict:
    """Epochs and steps the run finished, from its resumable last.pt."""
    import torch

    try:
        state = torch.load(run_dir / 'last.pt', map_location='cpu',
                           weights_only=False)['training']
    except (OSError, RuntimeError, KeyError) as exc:
        return {'error': f'no usable last.pt ({type(exc).__name__}: {exc})'}
    return {'steps': state['step'], 'full_epochs': state['epoch'],
            'batches_into_next_epoch': state['batch_in_epoch']}


def ratio_table(summary: Summary, args: argparse.Namespace, tag: str) -> int:
    """bench/bench_optimum_ratio.py of run `tag` vs the optimum and the shipped model."""
    folders = [f'{name}={args.scratch / f"eval_{tag}_{name}"}' for name in SETS]
    reference = [f'{name}={args.scratch / f"eval_shipped_{name}"}' for name in SETS]
    done = subprocess.run([args.python, str(REPO / 'bench' / 'bench_optimum_ratio.py'),
                           '--eval', *folders, '--reference', *reference],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    summary.tables += [f'## {tag} vs the L_pixel optimum and the shipped model', '',
                       done.stdout, done.stderr]
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='Train width 1.0 and 0.25 FIFN with the full '
                                     'OCCO objective in one GPU call (module docstring).')
    parser.add_argument('--pack', type=Path, default=REPO / 'gpu_pack')
    parser.add_argument('--out', type=Path, default=REPO / 'out' / 'gpu_train')
    parser.add_argument('--scratch', type=Path, default=None,
                        help='run folders and evaluations (default: a new temporary folder)')
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--python', default=sys.executable)
    parser.add_argument('--minutes', type=float, default=4.5,
                        help='training wall time of each run (both run at once; default 4.5)')
    parser.add_argument('--slack-s', type=float, default=120.0,
                        help='seconds a training may run past --minutes (data loading, the '
                        'last validation, saving) before it is killed (default 120)')
    parser.add_argument('--epochs', type=int, default=30,
                        help='at most this many epochs (default 30, the published maximum)')
    parser.add_argument('--max-steps', type=int, default=0, help='0: no limit (default)')
    parser.add_argument('--crop', type=int, default=256)
    parser.add_argument('--batch-size', type=int, default=12)
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                        help='data loader / occo-eval workers per process')
    parser.add_argument('--val-pairs', type=int, default=8,
                        help='training pairs scored after each epoch to keep the best model '
                        '(default 8)')
    parser.add_argument('--eval-limit', type=int, default=40,
                        help='pairs per eval set (default 40 = all, as the optimum table)')
    parser.add_argument('--eval-timeout', type=float, default=150.0)
    parser.add_argument('--plan', action='store_true',
                        help='check the pack and the options, print the commands, stop')
    args = parser.parse_args(argv)
    if args.minutes <= 0 or min(args.epochs, args.eval_limit, args.val_pairs) < 1:
        parser.error('--minutes must be > 0, --epochs, --val-pairs and --eval-limit >= 1')
    if args.scratch is None:
        args.scratch = (Path(tempfile.gettempdir()) / 'occo_gpu_train_SCRATCH' if args.plan
                        else Path(tempfile.mkdtemp(prefix='occo_gpu_train_')))
    summary = Summary(args.out)
    started = time.monotonic()
    hed = args.scratch / 'vgg16_hed.pt'
    try:
        manifest = verify(args.pack, None if args.plan else hed)
    except PackError as exc:
        summary.log(f'gpu_train: error: {exc}')
        summary.step('verify pack', started, error=str(exc))
        return 2
    summary.data.update(pack=manifest['data'], hed=manifest['hed'], device=args.device,
                        minutes=args.minutes, outputs=list(GPU_TRAIN_OUTPUTS))
    summary.step('verify pack', started, files=len(manifest['files']))
    commands = {tag: train_command(args, args.pack, hed, tag, options)
                for tag, _, options in RUNS}
    if args.plan:
        print(json.dumps({'train': commands, 'outputs': GPU_TRAIN_OUTPUTS}, indent=1))
        return 0

    args.scratch.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    started = time.monotonic()
    logs = {tag: (args.scratch / f'train_{tag}.log').open('w', encoding='utf-8')
            for tag in commands}
    processes = {tag: subprocess.Popen(command, stdout=logs[tag], stderr=subprocess.STDOUT,
                                       cwd=REPO, env=env)
                 for tag, command in commands.items()}
    summary.data['shipped'] = evaluate(summary, args, args.pack, SHIPPED, 'shipped')
    summary.step('evaluate the shipped model', started)
    limit = 60 * args.minutes + args.slack_s
    for tag, process in processes.items():
        try:
            status = process.wait(timeout=max(1.0, limit - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            process.kill()
            status = process.wait()
        logs[tag].close()
        text = (args.scratch / f'train_{tag}.log').read_text(encoding='utf-8', errors='replace')
        summary.log(f'$ {" ".join(commands[tag])}\n' + '\n'.join(
            line.split('\r')[-1] for line in text.splitlines()) + f'\n[exit {status}]')
        summary.data[tag] = {'exit': status, **epochs_done(args.scratch / f'train_{tag}')}
        summary.log(f'gpu_train: {tag}: {json.dumps(summary.data[tag])}')
    summary.step('train', started)

    failed = 0
    for tag, width, _ in RUNS:
        started = time.monotonic()
        model = args.scratch / f'fifn_{tag}_full.pt'
        if not model.is_file():
            summary.log(f'gpu_train: no model for {tag} (see its training log)')
            failed += 1
            continue
        target = args.out / f'fifn_{tag}_full.pt'
        target.write_bytes(model.read_bytes())
        summary.data[tag]['eval'] = evaluate(summary, args, args.pack, model, tag)
        summary.data[tag]['ratio_exit'] = ratio_table(summary, args, tag)
        summary.step(f'evaluate width {width:g}', started)
    epochs = {tag: summary.data[tag].get('full_epochs') for tag, _, _ in RUNS}
    summary.log(f'gpu_train: full epochs in {args.minutes:g} minutes: '
                + ', '.join(f'{tag} {count}' for tag, count in epochs.items()))
    summary.write()
    return 1 if failed or not all(isinstance(n, int) for n in epochs.values()) else 0


if __name__ == '__main__':
    sys.exit(main())
