"""Pieces shared by the training engine (:mod:`patchrefinenet.engine`) and the commands.

- reproducibility: :func:`seed_everything`, :func:`capture_rng_state` / :func:`restore_rng_state`
  (plain Python containers, so a resume file loads with ``torch.load(weights_only=True)``);
- the authors' plateau rule (docs/authors-refine.md §R7, docs/authors-seg.md §S3): :class:`PlateauSchedule`;
- devices and mixed precision: :func:`resolve_device`, :func:`autocast_context`;
- CPU threads: :func:`configure_threads` (physical cores, fewer under a competing load),
  :func:`choose_threads` (the pure decision);
- ``torchrun`` support: :func:`init_distributed`, :func:`barrier`, :func:`broadcast_object`,
  :func:`all_reduce_sum`, :func:`broadcast_buffers`, :func:`cleanup_distributed`;
- :func:`log_to_file`: attach the per-run log file the users expect for the length of a run.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from data_utils.errors import InputError

log = logging.getLogger("patchrefinenet")


# --------------------------------------------------------------------------- reproducibility

def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng_state() -> dict:
    """Snapshot every global RNG (python, numpy, torch CPU, CUDA if present).

    numpy's and Python's states are stored as lists/ints, and torch's as uint8 tensors, so the
    dict survives ``torch.save`` → ``torch.load(weights_only=True)``.
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": [int(v) for v in internal], "gauss_next": gauss},
        "numpy": {"kind": str(kind), "keys": [int(k) for k in keys], "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Restore a snapshot from :func:`capture_rng_state`; a CUDA part is skipped without CUDA."""
    try:
        py = state["python"]
        random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
        npy = state["numpy"]
        np.random.set_state((npy["kind"], np.asarray(npy["keys"], dtype=np.uint32), npy["pos"],
                             npy["has_gauss"], npy["cached_gaussian"]))
        torch.set_rng_state(state["torch"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"the saved RNG state is malformed ({type(exc).__name__}: {exc}); "
                         f"the resume file is damaged or from another program") from None
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# --------------------------------------------------------------------------- plateau rule

@dataclass(frozen=True)
class Decision:
    """What to do after an epoch: save (improved), stop, reload the best weights, the next lr."""

    improved: bool
    stop: bool
    reload_best: bool
    new_lr: float


class PlateauSchedule:
    """The authors' checkpoint / LR-decay / early-stop rule on a monitored value (docs/authors-refine.md §R7, docs/authors-seg.md §S3).

    After each epoch, :meth:`step` applies in this order:

    1. value strictly below the best → best ← value, counter ← 0, ``improved`` (save now);
       otherwise counter += 1;
    2. counter > ``stop_after`` → ``stop``;
    3. counter > ``decay_after`` → ``stop`` if lr < ``min_lr``, else ``reload_best`` and
       lr ← lr / ``factor``.

    The counter is not reset after a decay (as the authors), so with the PRN defaults
    (4, 8, 1.1, 5e-8) the 5th–8th consecutive non-improving epochs each reload the best weights
    and divide the lr by 1.1, and the 9th stops. The initial best is +inf.
    """

    def __init__(self, decay_after: int, stop_after: int, factor: float, min_lr: float) -> None:
        if decay_after < 0 or stop_after < 0:
            raise InputError(f"decay_after and stop_after must be >= 0, got {decay_after}, {stop_after}")
        if factor <= 0:
            raise InputError(f"the lr decay factor must be > 0, got {factor}")
        self.decay_after, self.stop_after = int(decay_after), int(stop_after)
        self.factor, self.min_lr = float(factor), float(min_lr)
        self.best = math.inf
        self.counter = 0

    def step(self, value: float, lr: float) -> Decision:
        """Record one epoch's ``value`` under learning rate ``lr`` and return the decision."""
        value = float(value)
        if not math.isfinite(value):
            raise FloatingPointError(f"the monitored value is {value}; training diverged")
        improved = value < self.best
        if improved:
            self.best, self.counter = value, 0
        else:
            self.counter += 1
        if self.counter > self.stop_after:
            return Decision(improved, True, False, lr)
        if self.counter > self.decay_after:
            if lr < self.min_lr:
                return Decision(improved, True, False, lr)
            return Decision(improved, False, True, lr / self.factor)
        return Decision(improved, False, False, lr)

    def state_dict(self) -> dict:
        """Plain-Python state for resume files."""
        return {"best": self.best, "counter": self.counter, "decay_after": self.decay_after,
                "stop_after": self.stop_after, "factor": self.factor, "min_lr": self.min_lr}

    def load_state_dict(self, state: dict) -> None:
        """Restore the best value and the counter (the rule's parameters come from the constructor)."""
        self.best, self.counter = float(state["best"]), int(state["counter"])


# --------------------------------------------------------------------------- devices, AMP

def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` if available else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` checked.

    Raises :class:`InputError` when CUDA (or a CUDA index) is asked for but absent.
    """
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise InputError(f"--device: unknown device {spec!r}; use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise InputError(f"--device: unsupported device type {device.type!r}; use auto, cpu, cuda or cuda:<index>")
    if not torch.cuda.is_available():
        raise InputError(f"--device {spec}: CUDA is not available on this machine "
                         f"(torch {torch.__version__}); use --device cpu or auto")
    n = torch.cuda.device_count()
    if device.index is not None and device.index >= n:
        raise InputError(f"--device {spec}: only {n} CUDA device(s) visible (indices 0..{n - 1})")
    return device


def autocast_context(device: torch.device, bf16: bool):
    """bf16 autocast when ``bf16`` is true (CUDA, or CPU if explicitly asked); a no-op otherwise.

    Same code path either way: ``with autocast_context(device, flag): out = model(x)``.
    """
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bool(bf16))


# --------------------------------------------------------------------------- CPU threads

def choose_threads(requested: int | None, cores: int, load_1min: float | None = None, own_load: float = 0.0,
                   processes: int = 1) -> int:
    """How many intra-op threads to use: ``requested`` if > 0, else ``cores`` minus the busy others.

    torch's thread pool waits at every operator for all its threads; when another process holds a
    core, one of them is not running and every operator waits for it (measured on 2 cores under a
    load of 3–5: base-model training 0.5 → 6–7 s/batch). So the automatic choice leaves the cores
    that other processes keep busy: ``max(1, cores − ⌊load_1min − own_load + 0.25⌋)``, where
    ``own_load`` is this process's share of the load average (see :func:`configure_threads`).
    ``load_1min`` None (unknown) means a quiet machine. ``processes``: ranks of one job on this
    machine (torchrun's ``LOCAL_WORLD_SIZE``), which share the free cores.
    """
    if requested is not None and requested > 0:
        return int(requested)
    free = max(1, int(cores))
    if load_1min is not None:
        others = max(0.0, float(load_1min) - max(0.0, float(own_load)))
        # a core counts as taken from 0.75 of a busy process on: the 1-minute average decays slowly, so
        # ~0.5 left over from a job that ended half a minute ago is more often the past than a competitor
        free = max(1, free - math.floor(others + 0.25))
    return max(1, free // max(1, int(processes)))


def physical_cores() -> int:
    """Physical cores this process may run on: its CPU affinity, one per (package, core) pair when
    the topology is readable (hyper-threads share a core's arithmetic units), capped by a cgroup
    CPU quota (containers)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    n = len(cores) or 1
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


def _own_load() -> float:
    """This process' contribution to the 1-minute load average, estimated from its CPU time.

    The load average is an exponential average with a 1-minute time constant, so a process that
    has kept ``u`` cores busy for ``t`` seconds contributes about ``u · (1 − e^(−t/60))``. Without
    this, a second command run in the same process (the demo) would count its predecessor's
    threads as a competing load.
    """
    try:
        fields_ = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start = int(fields_[19]) / os.sysconf("SC_CLK_TCK")  # seconds after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    elapsed = max(uptime - start, 1e-3)
    busy = time.process_time() / elapsed  # mean cores used since the process started
    return busy * (1.0 - math.exp(-elapsed / 60.0))


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count and log why (INFO when a competing load lowered the
    automatic choice, else DEBUG); returns it. ``threads`` > 0 is used as given.

    0 / None (auto): ``OMP_NUM_THREADS`` if set (the user's choice), else :func:`choose_threads`
    with :func:`physical_cores` and the 1-minute load average minus this process' own share. When
    the machine has more CPUs than this process may use, the load average (machine-wide) is scaled
    to this process' share of the CPUs.
    """
    if threads is not None and threads < 0:
        raise InputError(f"--threads must be >= 0 (0 = automatic), got {threads}")
    cores = physical_cores()
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not threads and env.isdigit() and int(env) > 0:
        n, why = int(env), f"OMP_NUM_THREADS={env}"
    elif threads:
        n, why = int(threads), "--threads"
    else:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = None
        machine = os.cpu_count() or cores
        if load is not None and machine > cores:
            load *= cores / machine
        own = _own_load()
        ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # torchrun: ranks on this machine
        n = choose_threads(None, cores, load, own, ranks)
        why = (f"automatic: {cores} physical core(s), 1-min load "
               + ("unknown" if load is None else f"{load:.2f} of which this process ~{min(own, load):.2f}")
               + (f", {ranks} ranks share them" if ranks > 1 else ""))
    torch.set_num_threads(n)
    # INFO only when the automatic choice leaves cores idle (a competing load): the surprising case
    level = logging.INFO if why.startswith("automatic") and n < cores else logging.DEBUG
    log.log(level, "CPU threads: %d (%s)", n, why)
    return n


# --------------------------------------------------------------------------- distributed

@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a ``torchrun`` job (world_size 1 when not launched by it).

    ``device`` is the device this rank should use (``cuda:<local_rank>`` under CUDA DDP).
    """

    rank: int
    world_size: int
    local_rank: int
    is_main: bool
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group described by torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``.

    gloo on CPU, nccl on CUDA (each rank on ``cuda:<LOCAL_RANK>``). Without those variables, or
    with ``WORLD_SIZE=1``, nothing is initialised and a single-process :class:`DistInfo` is
    returned. Calling it again inside an initialised group just reports the group.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size <= 1:
        return DistInfo(0, 1, 0, True, device)
    if not dist.is_available():
        raise InputError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA "
                             f"device(s) visible; use --nproc_per_node <= the GPU count")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "gloo" and not dist.is_gloo_available():
            raise InputError("CPU distributed training needs the gloo backend, absent from this torch build")
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_rank() == 0, device)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if _active():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (returns ``obj`` unchanged outside a process group)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place and return it (unchanged outside a process group)."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. BatchNorm running stats) to every rank (no-op outside a group).

    DDP averages gradients, so parameters agree; buffers are updated locally by each rank's own
    batches and only re-synchronised at the start of the next forward. Call this at the end of an
    epoch so that every rank holds exactly the state rank ``src`` saves.
    """
    if not _active():
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=src)


def cleanup_distributed() -> None:
    """Leave the process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- logging

@contextlib.contextmanager
def log_to_file(path: str | os.PathLike | None, mode: str = "a") -> Iterator[Path | None]:
    """Also write the ``patchrefinenet`` log to ``path`` inside the block (``None``: no file).

    The engine owns the per-run log files (their names depend on the run); the console is the
    caller's business (:func:`patchrefinenet.cli.common.setup_logging`).
    """
    if path is None:
        yield None
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode=mode)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger("patchrefinenet")
    level = logger.level
    if level == logging.NOTSET or level > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield path
    except BaseException as exc:  # the log ends with why the run ended, not with its last progress line
        if isinstance(exc, KeyboardInterrupt):
            logger.error("interrupted")
        elif not isinstance(exc, (SystemExit, GeneratorExit)):
            logger.error("error: %s", str(exc).strip() or type(exc).__name__)
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)
