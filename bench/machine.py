"""What machine a benchmark ran on, for the header of every printed result table."""

from __future__ import annotations

import os
from pathlib import Path
import platform


def cpu_description() -> str:
    """CPU model as lscpu reports it ('model name' in /proc/cpuinfo) and the core count."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text(encoding='utf-8').splitlines():
            if line.startswith('model name'):
                name = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return f'{name}, {os.cpu_count()} cores'
