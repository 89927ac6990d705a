"""Cost of the test targets: ``make test-fast`` (the core) and ``make test`` (everything).

Runs pytest the way each target does, ``--runs`` times, in a child process, and prints the
median wall-clock seconds and the median CPU seconds (user + system of the pytest process
and its children). On a shared machine the wall clock grows with the load while the CPU time
stays close to what the run costs alone, so both are reported, with the load average.

    python bench/bench_test_targets.py [--target fast|full|both] [--runs 3] [--json FILE]

Targets (issue 22), median of 3 runs on the idle 2-core development VM: ``make test-fast``
<= 20 s, ``make test`` <= 180 s. On a loaded machine compare the CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_description  # noqa: E402 (bench/ is not a package)

REPO = Path(__file__).resolve().parents[1]
#: The pytest arguments of each make target (Makefile: test-fast, test; TEST_JOBS=auto).
TARGETS = {
    'fast': ['-n', 'auto', '-m', 'not ros and not slow and not data and not bench'],
    'full': ['-n', 'auto'],
}
#: Wall-clock targets (s) per target on the idle 2-core VM.
LIMITS_S = {'fast': 20.0, 'full': 180.0}


def run_once(marker_args: list[str]) -> dict:
    """One pytest run of the target; wall and CPU seconds, exit status, summary line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    # as the Makefile runs it: Python may cache bytecode (PYTHONDONTWRITEBYTECODE unexported)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONDONTWRITEBYTECODE'}
    proc = subprocess.run([sys.executable, '-m', 'pytest', 'test', '-q', '-p',
                           'no:cacheprovider', *marker_args], cwd=REPO, capture_output=True,
                          text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {'wall_s': wall, 'cpu_s': cpu, 'load_1min_at_start': load,
            'returncode': proc.returncode, 'summary': lines[-1] if lines else ''}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--target', choices=['fast', 'full', 'both'], default='fast',
                        help='which target to time')
    parser.add_argument('--runs', type=int, default=3, help='runs per target (median)')
    parser.add_argument('--json', type=Path, default=None,
                        help='also write every run and the medians to this JSON file')
    args = parser.parse_args(argv)
    targets = ['fast', 'full'] if args.target == 'both' else [args.target]
    print(f'machine: {cpu_description()}; python {sys.version.split()[0]}')
    report = {'machine': cpu_description(), 'targets': {}}
    for target in targets:
        runs = []
        for index in range(args.runs):
            result = run_once(TARGETS[target])
            runs.append(result)
            print(f'{target} run {index + 1}: wall {result["wall_s"]:.1f} s, CPU '
                  f'{result["cpu_s"]:.1f} s, load {result["load_1min_at_start"]:.1f}, '
                  f'exit {result["returncode"]}: {result["summary"]}', flush=True)
        medians = {key: statistics.median(r[key] for r in runs) for key in ('wall_s', 'cpu_s')}
        report['targets'][target] = {'runs': runs, **medians}
        limit = f' (target <= {LIMITS_S[target]:.0f} s wall, idle)'
        print(f'{target}: median wall {medians["wall_s"]:.1f} s, median CPU '
              f'{medians["cpu_s"]:.1f} s over {len(runs)} runs{limit}')
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
