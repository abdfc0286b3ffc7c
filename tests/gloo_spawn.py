"""Run a function on ``world`` gloo ranks of this machine and collect what each rank returns.

The sharded tests of every folder share it (pyproject's ``pythonpath`` puts tests/ on the path):
``run_ranks(main, world, out, *args)`` spawns ``world`` processes, joins them into one gloo
process group (on a free local port), calls
``main(rank, world, out, *args)`` on each and returns the ranks' return values, in rank order
(each saved by its rank to ``out/rank{r}.pt`` and loaded here). ``main`` must be a module-level
function (the spawned processes import it by name).
"""

import os
import socket
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now (for the rendezvous of gloo ranks or torchrun)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, world: int, port: int, out: str, main, args: tuple) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        torch.save(main(rank, world, out, *args), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_ranks(main, world: int, out, *args) -> list:
    """``[main(r, world, out, *args) for r in range(world)]``, each on its own gloo rank (see the module)."""
    mp.spawn(_rank, args=(world, free_port(), str(out), main, args), nprocs=world, join=True)
    return [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(world)]
