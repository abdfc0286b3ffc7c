"""``sdfm sample RUN_DIR``: draw samples from a trained run into an ``.npz`` and a picture.

The run folder is one training job's ``results/runs/<dataset>/<method>/eps<e>/seed<s>/`` (its
``model.pt``: the EMA velocity field), or the ``model.pt`` itself. Outputs, written atomically:

- ``FILE.npz``: ``samples`` float32 ``(n, *sample_shape)`` in model space (images in [-1, 1]),
  ``labels`` int64 ``(n,)`` for a class-conditional model, ``solver`` and ``nfe`` (0-d, the NFE
  used: dopri5 picks its own). Image runs also get ``arr_0``, the same images as uint8 (n, H, W, 3)
  RGB, the layout FID tools read (:func:`sdfm.jobs.evaluate.save_sample_array`).
- ``FILE.png``: an 8-column grid of the images (sorted by label), or for points a scatter plot of
  the samples (their first two coordinates) over the run's held-out data in grey when
  ``results/data/<dataset>.npz`` is found (or ``--data`` names it).

Noise is seeded (``--seed``), so the same command gives the same samples on any device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sdfm.data import DataError
from sdfm.io import atomic_path

__all__ = ["find_model", "sample_run", "plot_points"]


def find_model(run: str | Path) -> Path:
    """The ``model.pt`` of a run folder (or the file itself).

    Raises:
        FileNotFoundError: neither a model file nor a folder holding one.
    """
    path = Path(run)
    model = path / "model.pt" if path.is_dir() else path
    if not model.is_file():
        raise FileNotFoundError(f"{path}: no model.pt; give a run folder results/runs/<dataset>/<method>/eps<e>/seed<s>")
    return model


def _data_file(model: Path, data: str | Path | None) -> Path | None:
    """``--data``, else ``<results>/data/<dataset>.npz`` of a run in ``<results>/runs/<dataset>/<m>/<eps>/<seed>``."""
    if data is not None:
        return Path(data)
    run_dir = model.parent
    guess = run_dir.parents[4] / "data" / f"{run_dir.parents[2].name}.npz" if len(run_dir.parents) > 4 else None
    return guess if guess is not None and guess.is_file() else None


def _labels(state: dict, n: int, label: int | None) -> torch.Tensor | None:
    """The conditioning labels: ``label`` for every sample, or the classes in turn (0, 1, ..., K-1, 0, ...)."""
    num_classes = state.get("model_extra", {}).get("num_classes")
    if num_classes is None:
        if label is not None:
            raise DataError("--label: this model is not class-conditional; drop --label")
        return None
    if label is not None and not 0 <= label < num_classes:
        raise DataError(f"--label {label}: the model knows classes 0..{num_classes - 1}; pick one of them")
    return torch.full((n,), label) if label is not None else torch.arange(n) % num_classes


def sample_run(run: str | Path, out: str | Path, *, n: int = 64, solver: str = "euler", nfe: int | None = 4,
               seed: int = 0, guidance: float = 1.0, label: int | None = None, data: str | Path | None = None,
               device: str | None = None) -> dict:
    """Draw ``n`` samples of a trained run; write ``out`` (.npz) and the picture beside it (.png).

    Returns:
        ``{"npz": path, "png": path, "nfe": NFE used, "shape": sample shape, "kind": "images" | "points"}``.
    """
    from sdfm.fm.sampling import generate
    from sdfm.jobs.evaluate import save_sample_grid
    from sdfm.models.checkpoint import load_trained
    from sdfm.runtime import pick_device

    if n < 1:
        raise DataError(f"--n {n}: draw at least one sample")
    out = Path(out)
    if out.suffix != ".npz":
        raise DataError(f"--out {out}: give a file name ending in .npz (the picture goes beside it as .png)")
    model_path = find_model(run)
    device = pick_device(device)
    model, state = load_trained(model_path, device)
    if state.get("superres"):
        raise DataError(f"{model_path}: a super-resolution model samples given low-resolution images; "
                        "its samples are under the run's superres/ folder (sdfm evaluate)")
    shape = tuple(state["sample_shape"])
    labels = _labels(state, n, label)
    samples, used = generate(model, n, shape, solver=solver, nfe=nfe, labels=labels, guidance=guidance, seed=seed,
                             device=device)
    kind = "images" if len(shape) == 3 else "points"
    arrays = {"samples": samples.numpy().astype(np.float32), "solver": np.array(solver), "nfe": np.array(used)}
    if labels is not None:
        arrays["labels"] = labels.numpy().astype(np.int64)
    if kind == "images":
        from sdfm.metrics.fidelity import to_uint8_rgb

        arrays["arr_0"] = to_uint8_rgb(samples).permute(0, 2, 3, 1).contiguous().numpy()
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    png = out.with_suffix(".png")
    if kind == "images":
        save_sample_grid(samples, png, labels, count=n)
    else:
        data_file = _data_file(model_path, data)
        reference = _held_out(data_file) if data_file is not None else None
        plot_points(samples.numpy(), png, reference, labels=None if labels is None else labels.numpy(),
                    title=f"{_run_label(model_path)} ({solver}, NFE {used})")
    return {"npz": out, "png": png, "nfe": used, "shape": shape, "kind": kind}


def _run_label(model_path: Path) -> str:
    """``<dataset>/<method>/eps<e>/seed<s>`` when the model lies in a run folder, else the file name."""
    parts = model_path.parent.parts
    return "/".join(parts[-4:]) if model_path.name == "model.pt" and len(parts) >= 4 else model_path.name


def _held_out(path: Path) -> np.ndarray:
    from sdfm.data import load_prepared

    data = load_prepared(path)
    return data.test.reshape(len(data.test), data.dim).numpy()


def plot_points(samples: np.ndarray, png: str | Path, reference: np.ndarray | None = None,
                labels: np.ndarray | None = None, title: str = "") -> Path:
    """A square scatter plot of the samples' first two coordinates (coloured by label), data in grey behind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flat = samples.reshape(len(samples), -1)
    if flat.shape[1] == 1:
        flat = np.concatenate([flat, np.zeros_like(flat)], axis=1)
    fig, ax = plt.subplots(figsize=(4.2, 4.4), layout="constrained")
    if reference is not None:
        ref = reference.reshape(len(reference), -1)
        ref = np.concatenate([ref, np.zeros_like(ref)], axis=1) if ref.shape[1] == 1 else ref
        ax.scatter(ref[:, 0], ref[:, 1], s=2, color="#c8c8c8", lw=0, rasterized=True, label="held-out data")
    ax.scatter(flat[:, 0], flat[:, 1], s=7, c=labels if labels is not None else "#1f6fb4",
               cmap="tab10" if labels is not None else None, lw=0, label="samples")
    ax.set_aspect("equal", adjustable="datalim")
    dims = "" if samples.reshape(len(samples), -1).shape[1] <= 2 else f" (coordinates 1 and 2 of {flat.shape[1]})"
    ax.set_title(f"{title}{dims}\n{len(samples)} samples" + ("; held-out data in grey" if reference is not None else ""),
                 fontsize=9)
    png = Path(png)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    plt.close(fig)
    return png
