"""Bring existing labels and imagery into the store."""

from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from translandseg.data import IMAGE_SUFFIXES, find_pairs
from translandseg.raster import read_label

from .store import AnnotationStore, StoreError


def import_pairs(store: AnnotationStore, folder: Path, annotator: str = "import", progress: bool = False) -> int:
    """Import ``image/NAME`` + ``label/NAME`` pairs as imported, accepted annotations.

    Importing the same labels again adds nothing. Returns the number of new annotations.
    """
    added = 0
    for pair in tqdm(find_pairs(folder), desc=f"import {Path(folder).name}", unit="pair", disable=not progress):
        image_id = store.add_image(pair.image, added_by=annotator)
        label = read_label(pair.label)
        latest = store.latest_annotation(image_id)
        if latest is not None and latest.source == "imported" and np.array_equal(latest.mask, label):
            continue
        try:
            store.save_annotation(image_id, label, "imported", annotator, review="accepted", reviewer=annotator)
        except StoreError as error:
            raise StoreError(f"{pair.name}: {error}") from error
        added += 1
    return added


def import_images(store: AnnotationStore, paths: Iterable[Path], added_by: str = "import") -> int:
    """Register unlabelled images (PNG, JPEG, GeoTIFF with its georeferencing) for labelling."""
    paths = [p for p in paths if Path(p).suffix.lower() in IMAGE_SUFFIXES]
    for path in paths:
        store.add_image(path, added_by=added_by)
    return len(paths)
