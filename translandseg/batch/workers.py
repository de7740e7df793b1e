"""What each Dask worker holds: the model, loaded once per worker and checked against the client's.

The client sends a ``ModelSpec`` (which base model and adapter, and the adapter's SHA-256);
``ModelPlugin`` loads it on a worker at its first task, refusing an adapter file on that worker
whose SHA-256 differs, so every worker predicts with the weights the client named.
"""

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from distributed import Client, LocalCluster, WorkerPlugin, get_worker

from ..download import sha256_of
from ..loading import LoadedModel, load_model

PLUGIN_NAME = "translandseg-model"


@dataclass(frozen=True)
class ModelSpec:
    """A trained model as every worker loads it; paths must exist on the workers."""

    model_type: str
    adapter: Path
    adapter_sha256: str
    sam_checkpoint: Optional[Path] = None
    device: str = "cpu"
    cache_dir: Optional[Path] = None  # where a worker finds (or downloads) the base checkpoint
    download: bool = True

    @classmethod
    def of(cls, model_type: str, adapter: Path, **options) -> "ModelSpec":
        return cls(model_type, Path(adapter).resolve(), sha256_of(Path(adapter)), **options)


class ModelPlugin(WorkerPlugin):
    """Loads ``spec`` on a worker once, at its first use; ``torch_threads`` caps each worker's
    torch threads (a local cluster shares the machine's cores between its workers)."""

    def __init__(self, spec: ModelSpec, torch_threads: Optional[int] = None) -> None:
        self.spec = spec
        self.torch_threads = torch_threads
        self._loaded: Optional[LoadedModel] = None
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"spec": self.spec, "torch_threads": self.torch_threads}

    def __setstate__(self, state) -> None:
        self.__init__(state["spec"], state["torch_threads"])

    def setup(self, worker) -> None:
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)

    def model(self) -> LoadedModel:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> LoadedModel:
        spec = self.spec
        if not spec.adapter.is_file():
            raise FileNotFoundError(f"adapter {spec.adapter} is missing on worker {get_worker().address}")
        found = sha256_of(spec.adapter)
        if found != spec.adapter_sha256:
            raise ValueError(f"adapter {spec.adapter} on worker {get_worker().address} has SHA-256 {found[:12]}, "
                             f"not the client's {spec.adapter_sha256[:12]}: copy the same file to every worker")
        return load_model(spec.model_type, spec.sam_checkpoint, spec.adapter, device=spec.device,
                          cache=spec.cache_dir, download=spec.download)  # fmt: skip


def worker_model() -> LoadedModel:
    """The model of the worker running this task (``ModelPlugin``, registered by the job)."""
    return get_worker().plugins[PLUGIN_NAME].model()


def use_model(client: Client, spec: ModelSpec) -> None:
    """Have every worker of ``client`` load ``spec`` for the tasks that follow (``worker_model``);
    a local cluster's workers share the machine's cores out as torch threads. Workers that already
    hold ``spec`` keep it loaded, so jobs that follow one another on a cluster load it once."""
    threads = None
    if isinstance(client.cluster, LocalCluster):
        threads = max(1, (os.cpu_count() or 1) // max(1, len(client.scheduler_info()["workers"])))
    held = client.run(_held_model)
    if held and all(found == (spec, threads) for found in held.values()):
        return
    client.register_plugin(ModelPlugin(spec, threads), name=PLUGIN_NAME)


def _held_model(dask_worker) -> Optional[tuple]:
    """On a worker: the (spec, torch threads) of its model plugin, if it has one."""
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    return (plugin.spec, plugin.torch_threads) if plugin else None
