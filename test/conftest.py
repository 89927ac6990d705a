"""Test-wide settings: an isolated DDS domain on localhost and the shared data folder."""

import os
from pathlib import Path
import random

import pytest

# Before anything imports rclpy: a private domain so parallel runs never see each other's
# topics, localhost-only discovery, and Fast DDS's large-data transport, without which
# full-size images between processes are mostly lost (ROS2_NOTES.md).
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 101)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA')

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


@pytest.fixture(scope='session')
def shared_data() -> Path:
    """../shared/data (real IR/visible pairs); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f'real image pairs not found at {SHARED_DATA} (the shared folder beside '
                    'the repository); this test needs them')
    return SHARED_DATA
