"""Atomic writes: complete file or old file, normal permissions."""

import os
import stat

import pytest

from occo_ros.util.atomic_file import atomic_write, atomic_write_bytes

pytestmark = [pytest.mark.core]


def test_written_file_has_umask_permissions_not_private_temp_ones(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / 'sub' / 'model.pt', b'abc')
    finally:
        os.umask(old)
    assert path.read_bytes() == b'abc'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = atomic_write_bytes(tmp_path / 'engine', b'old')

    def broken(stream):
        stream.write(b'partial')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert path.read_bytes() == b'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['engine']
