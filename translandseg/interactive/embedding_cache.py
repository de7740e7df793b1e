"""A cache of image embeddings: in memory (LRU, bounded in MB) and on disk, shared by sessions.

Encoding an image is the slow step (about 25 s for SAM vit_b at 1024² on two CPU cores), so
each embedding is computed once: a key names the image bytes, the encoder and the window, a
second request for a key being computed waits for that computation, and finished embeddings
are kept in memory and, when a folder is given, in ``.npy`` files across restarts: lossless
float32 by default, or float16 at half the disk (``disk_dtype``: the training cache of many
thousand frames) in files of their own name, so neither kind is ever read as the other.
"""

import hashlib
import logging
import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddingKey:
    image_sha256: str
    model_id: str  # the encoder and its input size
    window: Tuple[int, int, int, int]  # col_off, row_off, width, height in image pixels
    rendering: str  # bands and stretch, see RasterImage.rendering

    @property
    def file_name(self) -> str:
        text = f"{self.image_sha256}|{self.model_id}|{self.window}|{self.rendering}"
        return hashlib.sha256(text.encode()).hexdigest()[:40] + ".npy"


DISK_DTYPES = ("float32", "float16")


class EmbeddingCache:
    def __init__(self, memory_mb: float = 512, folder: Optional[Path] = None, disk_mb: float = 4096,
                 disk_dtype: str = "float32") -> None:  # fmt: skip
        """Keep up to ``memory_mb`` of embeddings in memory and ``disk_mb`` (``math.inf``: all) in
        ``folder``, stored as ``disk_dtype`` ("float32" or "float16")."""
        if disk_dtype not in DISK_DTYPES:
            raise ValueError(f"disk_dtype must be one of {', '.join(DISK_DTYPES)}, not {disk_dtype!r}")
        self.memory_bytes = int(memory_mb * 2**20)
        self.folder = Path(folder) if folder is not None else None
        self.disk_bytes = disk_mb * 2**20
        self.disk_dtype = disk_dtype
        self._memory: "OrderedDict[EmbeddingKey, np.ndarray]" = OrderedDict()
        self._pending: Dict[EmbeddingKey, Future] = {}
        self._lock = threading.Lock()
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="translandseg-prefetch")
        self.hits = self.misses = 0
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def get(self, key: EmbeddingKey, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The embedding for ``key``: from memory, from disk, or computed once by ``compute``."""
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                self.hits += 1
                return self._memory[key]
            future = self._pending.get(key)
            owner = future is None
            if owner:
                future = self._pending[key] = Future()
        if not owner:
            return future.result()
        try:
            embedding = self._from_disk(key)
            if embedding is None:
                self.misses += 1
                embedding = np.ascontiguousarray(compute(), dtype=np.float32)
                self._to_disk(key, embedding)
            else:
                self.hits += 1
            self._remember(key, embedding)
            future.set_result(embedding)
            return embedding
        except BaseException as error:
            future.set_exception(error)
            raise
        finally:
            with self._lock:
                self._pending.pop(key, None)

    def prefetch(self, key: EmbeddingKey, compute: Callable[[], np.ndarray]) -> Future:
        """Compute ``key`` in a background thread unless it is cached or on its way."""
        return self._background.submit(self._quietly, key, compute)

    def _quietly(self, key: EmbeddingKey, compute: Callable[[], np.ndarray]) -> None:
        try:
            self.get(key, compute)
        except Exception as error:  # the foreground request will compute again and report it
            log.warning("prefetching an embedding failed: %s", error)

    def __contains__(self, key: EmbeddingKey) -> bool:
        with self._lock:
            in_memory = key in self._memory
        return in_memory or (self.folder is not None and self._path(key).is_file())

    @property
    def memory_used(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._memory.values())

    def _remember(self, key: EmbeddingKey, embedding: np.ndarray) -> None:
        with self._lock:
            self._memory[key] = embedding
            total = sum(e.nbytes for e in self._memory.values())
            while total > self.memory_bytes and len(self._memory) > 1:
                total -= self._memory.popitem(last=False)[1].nbytes

    def _from_disk(self, key: EmbeddingKey) -> Optional[np.ndarray]:
        if self.folder is None:
            return None
        path = self._path(key)
        try:
            embedding = np.load(path, allow_pickle=False).astype(np.float32, copy=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:  # a damaged file is recomputed, never trusted
            log.warning("ignoring unreadable cached embedding %s: %s", path, error)
            return None
        os.utime(path)  # recently used: evicted last
        return embedding

    def _to_disk(self, key: EmbeddingKey, embedding: np.ndarray) -> None:
        if self.folder is None:
            return
        path = self._path(key)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            with open(partial, "wb") as out:
                np.save(out, embedding.astype(self.disk_dtype, copy=False), allow_pickle=False)
            os.replace(partial, path)
            if self.disk_bytes < math.inf:  # an unbounded cache (training's) never lists its files
                self._trim_disk()
        except OSError as error:  # a full or read-only disk costs speed, not correctness
            partial.unlink(missing_ok=True)
            log.warning("could not cache an embedding in %s: %s", self.folder, error)

    def _path(self, key: EmbeddingKey) -> Path:
        name = key.file_name
        return self.folder / (name if self.disk_dtype == "float32" else name.replace(".npy", f".{self.disk_dtype}.npy"))

    def _trim_disk(self) -> None:
        files = sorted(self.folder.glob("*.npy"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for oldest in files[:-1]:
            if total <= self.disk_bytes:
                break
            total -= oldest.stat().st_size
            oldest.unlink(missing_ok=True)
