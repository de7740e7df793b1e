"""The queue's order by the model's uncertainty: the images a version is least sure of come first.

A version's uncertainty of an image is the mean binary entropy of its automatic probabilities
(``Predictor.uncertainty``), recorded per image and version in the ``uncertainty`` table. A
retraining run scores the images still waiting for a label with the version it made; ``translandseg
rank`` scores them with any version. Scoring costs one automatic mask per image, so a ``limit``
scores a sample of them, the same sample for the same version. The store's ``queue_order`` setting
says which order the app's queue follows: "uncertainty" (the least certain first) by default, since
on a new region it taught the model more from the same number of labels (bench/README.md), or
"added".
"""

import hashlib
from typing import Callable, List, Optional

from translandseg.loading import LoadedModel
from translandseg.predict import REFERENCE_PRECISION, Predictor
from translandseg.raster import RasterImage

from .store import QUEUE_ORDERS, AnnotationStore, StoreError

QUEUE_ORDER = "queue_order"
DEFAULT_QUEUE_ORDER = "uncertainty"


def unscored(store: AnnotationStore, version: str) -> List[str]:
    """Ids of the images without a label that ``version`` has not scored, in a fixed order drawn
    from the version's name (so a limited scoring takes a fair sample, the same one each time)."""
    rows = store.db.query("""select i.id from images i
        where not exists (select 1 from annotations a where a.image_id = i.id)
          and not exists (select 1 from uncertainty u where u.image_id = i.id and u.model_version = ?)""", [version])
    return sorted((row["id"] for row in rows), key=lambda i: hashlib.sha256(f"{version}:{i}".encode()).digest())


def score_images(store: AnnotationStore, loaded: LoadedModel, version: str, limit: Optional[int] = None,
                 on_image: Optional[Callable[[int, int], None]] = None) -> int:  # fmt: skip
    """Record the uncertainty of ``loaded``, registered as ``version``, of up to ``limit`` unlabelled
    images it has not scored; ``on_image(done, total)`` after each. Returns how many it scored."""
    todo = unscored(store, version)[:limit]
    predictor = Predictor(loaded.model, precision=REFERENCE_PRECISION)
    for done, image_id in enumerate(todo, 1):
        with store.image_file(image_id) as path, RasterImage(path) as image:
            store.record_uncertainty(image_id, version, predictor.uncertainty(image))
        if on_image is not None:
            on_image(done, len(todo))
    return len(todo)


def queue_order(store: AnnotationStore) -> str:
    """The setting: the order of the app's queue (``QUEUE_ORDERS``)."""
    row = store.db.execute("select value from settings where key = ?", [QUEUE_ORDER]).fetchone()
    return row[0] if row else DEFAULT_QUEUE_ORDER


def set_queue_order(store: AnnotationStore, order: str) -> None:
    if order not in QUEUE_ORDERS:
        raise StoreError(f"queue order must be one of {QUEUE_ORDERS}, not {order!r}")
    with store.writing() as db:
        db["settings"].upsert({"key": QUEUE_ORDER, "value": order}, pk="key")
