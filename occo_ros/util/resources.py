"""Where the shipped files (default model, config) are found, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

# The pixel-loss model: it scores above the full-objective model on our eval sets and shows
# fewer artefacts (models/MODEL_CARD.md).
DEFAULT_MODEL = 'fifn_w025_pixel.pt'


def package_share_dir() -> Path | None:
    """share/occo_ros of a colcon/ament install, or None when not installed that way."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory('occo_ros'))
    except (PackageNotFoundError, ValueError, OSError):  # OSError: AMENT_PREFIX_PATH unset
        return None


def shipped_file(*parts: str) -> Path:
    """A file shipped with the package: from the source checkout if this module runs from one,
    else from share/occo_ros. The returned path may not exist; callers report that."""
    checkout = Path(__file__).resolve().parents[2].joinpath(*parts)
    if checkout.exists():
        return checkout
    share = package_share_dir()
    return share.joinpath(*parts) if share is not None else checkout


def default_model_path() -> Path:
    """The shipped default FIFN checkpoint (width 0.25, see models/MODEL_CARD.md)."""
    return shipped_file('models', DEFAULT_MODEL)
