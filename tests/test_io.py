"""Atomic writes: a failed or killed writer never leaves a partial file under the target's name."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from sdfm.io import atomic_path, atomic_torch_save, atomic_write_json, atomic_write_text


def test_a_failing_write_leaves_neither_the_target_nor_a_temporary(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_a_failing_rewrite_keeps_the_old_content(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old\n")
    with pytest.raises(TypeError):  # not JSON-serialisable
        atomic_write_json(target, {"not json": object()})
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_sigkill_during_writes_never_exposes_a_partial_file(tmp_path):
    """A child rewrites a 16 MB tensor of value k in a loop; kill -9 it 8 times at random moments.

    After each kill the target is absent or a complete tensor of one value (the last write that
    was renamed into place); only hidden temporaries may be left over.
    """
    target = tmp_path / "weights.pt"
    child = textwrap.dedent(f"""
        import sys, torch
        from sdfm.io import atomic_torch_save
        k = int(sys.argv[1])
        print("ready", flush=True)
        while True:
            atomic_torch_save(torch.full((4_000_000,), float(k)), {str(target)!r})
            k += 1
    """)
    rng = random.Random(0)
    seen = set()
    for attempt in range(8):
        proc = subprocess.Popen([sys.executable, "-c", child, str(1000 * attempt)], start_new_session=True,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"  # past the imports (slow on a loaded machine)
        time.sleep(rng.uniform(0.2, 1.0))  # into the write loop: several 16 MB writes per second
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if target.exists():
            values = torch.load(target, weights_only=True)
            assert values.shape == (4_000_000,) and bool((values == values[0]).all())
            seen.add(float(values[0]))
    assert len(seen) >= 2, "the writer never got far enough to be killed mid-loop"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "weights.pt"]
    assert all(name.startswith(".weights.pt.") and name.endswith(".tmp") for name in leftovers)
