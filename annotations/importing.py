"""Bring existing labels and imagery into the store."""

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from translandseg.data import IMAGE_SUFFIXES, find_pairs
from translandseg.raster import read_label

from .store import AnnotationStore, StoreError


@dataclass(frozen=True)
class Imported:
    added: int  # new annotations
    skipped: int  # images whose label in the store differs and was kept (``replace`` not asked for)


def import_pairs(store: AnnotationStore, folder: Path, annotator: str = "import", replace: bool = False,
                 progress: bool = False) -> Imported:  # fmt: skip
    """Import ``image/NAME`` + ``label/NAME`` pairs as imported, accepted annotations.

    An image whose latest label in the store is another one (an analyst's work, a review, an
    earlier import) keeps it unless ``replace``: imports never overwrite a decision silently.
    Importing the same labels again adds nothing.
    """
    added = skipped = 0
    for pair in tqdm(find_pairs(folder), desc=f"import {Path(folder).name}", unit="pair", disable=not progress):
        image_id = store.add_image(pair.image, added_by=annotator)
        label = read_label(pair.label)
        latest = store.latest_annotation(image_id)
        if latest is not None and latest.source == "imported" and np.array_equal(latest.mask, label):
            continue
        if latest is not None and not replace:
            skipped += 1
            continue
        try:
            store.save_annotation(image_id, label, "imported", annotator, review="accepted", reviewer=annotator)
        except StoreError as error:
            raise StoreError(f"{pair.name}: {error}") from error
        added += 1
    return Imported(added, skipped)


def import_images(store: AnnotationStore, paths: Iterable[Path], added_by: str = "import") -> int:
    """Register unlabelled images (PNG, JPEG, GeoTIFF with its georeferencing) for labelling."""
    paths = [p for p in paths if Path(p).suffix.lower() in IMAGE_SUFFIXES]
    for path in paths:
        store.add_image(path, added_by=added_by)
    return len(paths)
