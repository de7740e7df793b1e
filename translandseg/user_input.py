"""What a user's input can get wrong, shared by the command line and the web app: the errors that
are reported as a message (never a traceback), and option values checked as they are read."""

import argparse

from annotations.store import StoreError

from .adapter import AdapterError
from .download import DownloadError
from .raster import ImageReadError
from .sam_checkpoints import CheckpointUnavailable
from .sam_weights import CheckpointError

USER_ERRORS = (AdapterError, CheckpointError, CheckpointUnavailable, DownloadError, FileNotFoundError,
               ImageReadError, StoreError, ValueError)  # fmt: skip


def probability_threshold(text: str) -> float:
    """A probability threshold strictly between 0 and 1 (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"a threshold lies between 0 and 1, not {text!r}")
    return value


MIN_TILE_SIDE = 16


def tile_side(text: str) -> int:
    """A tile or window side in pixels, at least ``MIN_TILE_SIDE`` (an argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < MIN_TILE_SIDE:
        raise argparse.ArgumentTypeError(f"a tile side is a whole number of at least {MIN_TILE_SIDE} pixels, "
                                         f"not {text!r}")  # fmt: skip
    return value
