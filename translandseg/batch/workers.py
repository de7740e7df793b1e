"""What each Dask worker holds: the model, loaded once per worker and checked against the client's.

The client sends a ``ModelSpec`` (which base model and adapter, and the adapter's SHA-256);
``ModelPlugin`` loads it on a worker at its first task, refusing an adapter file on that worker
whose SHA-256 differs, so every worker predicts with the weights the client named.
"""

import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import torch
from distributed import Client, WorkerPlugin, get_worker
from distributed.comm import get_address_host

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
    """Loads ``spec`` on a worker once, at its first use; ``torch_threads`` gives each host's
    workers their torch threads (``torch_threads_by_host``; a worker not in it takes its host's
    cores over its own task threads)."""

    def __init__(self, spec: ModelSpec, torch_threads: Optional[Dict[str, int]] = None) -> None:
        self.spec = spec
        self.torch_threads = torch_threads
        self._loaded: Optional[LoadedModel] = None
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"spec": self.spec, "torch_threads": self.torch_threads}

    def __setstate__(self, state) -> None:
        self.__init__(state["spec"], state["torch_threads"])

    def setup(self, worker) -> None:
        default = max(1, usable_cores() // worker.state.nthreads)
        torch.set_num_threads((self.torch_threads or {}).get(get_address_host(worker.address), default))

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
    """Have every worker of ``client`` load ``spec`` for the tasks that follow (``worker_model``),
    each host's cores shared out among its workers as torch threads. Workers that already hold
    ``spec`` keep it loaded, so jobs that follow one another on a cluster load it once."""
    threads = torch_threads_by_host(client)
    held = client.run(_held_model)
    if held and all(found == (spec, threads) for found in held.values()):
        return
    client.register_plugin(ModelPlugin(spec, threads), name=PLUGIN_NAME)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, a cgroup's cpuset), else all."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def torch_threads_by_host(client: Client) -> Dict[str, int]:
    """Each host's cores over the task threads of all its workers: the torch threads of each one."""
    cores = client.run(usable_cores)
    threads: Counter = Counter()
    host_cores: Dict[str, int] = {}
    for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
        host = get_address_host(address)
        threads[host] += info["nthreads"]
        host_cores[host] = min(host_cores.get(host, cores[address]), cores[address])
    return {host: max(1, host_cores[host] // count) for host, count in threads.items()}


def _held_model(dask_worker) -> Optional[tuple]:
    """On a worker: the (spec, torch threads) of its model plugin, if it has one."""
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    return (plugin.spec, plugin.torch_threads) if plugin else None
