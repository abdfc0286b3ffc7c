"""Cross-field checks of one data set's merged settings (:func:`sdfm.config.dataset_settings`) for
:func:`sdfm.config.validate_config`: the PCA dimension and super-resolution, and the config key a
merged setting came from (for the one-line errors).
"""

from __future__ import annotations

from sdfm.data.registry import dataset_options
from sdfm.data.toy import TOY_DATASETS
from sdfm.errors import ConfigError

__all__ = ["IMAGE_SIDES", "check_pca", "check_superres", "data_dimension", "setting_key"]


def data_dimension(source: str, options: dict) -> int | None:
    """The flat dimension D of a data set, from its source and options alone (None if unknown before loading)."""
    from sdfm.data.imagenet import IMAGENET_DATASETS

    if source in TOY_DATASETS:
        return 2
    fixed = {"digits": 64, "animals": 784, "cifar10": 3072}
    if source in fixed:
        return fixed[source]
    if source in IMAGENET_DATASETS:
        return 3 * IMAGENET_DATASETS[source].resolution ** 2
    if source == "image_folder":
        return int(options.get("channels", 3)) * int(options.get("resolution", 64)) ** 2
    return None


def check_pca(config: dict, name: str, merged: dict) -> None:
    """``potential.pca_dim``: below the data dimension."""
    potential = merged["potential"]
    k = potential.get("pca_dim")
    if k is None:
        return
    where = setting_key(config, name, "potential", "pca_dim")
    dim = data_dimension(merged["source"], merged["options"])
    if dim is not None and k >= dim:
        raise ConfigError(f"config key '{where}': {k} is not below the dimension {dim} of data set '{name}'; "
                          f"use a smaller k, or null for the full space")


def setting_key(config: dict, name: str, stage: str, key: str) -> str:
    """The config key a merged setting came from: the dataset's entry if it sets it, else the top level."""
    if key in config["datasets"][name].get(stage, {}):
        return f"datasets.{name}.{stage}.{key}"
    return f"{stage}.{key}"


#: Image side of the data sets whose size is fixed (image_folder: its ``resolution`` option).
IMAGE_SIDES = {"digits": 8, "animals": 28, "cifar10": 32, "imagenet32": 32, "imagenet64": 64}


def check_superres(config: dict, name: str, merged: dict) -> None:
    """``superres``: image sets and UNets only, not with ``conditional``, a factor dividing the side; psnr / ssim need it."""
    superres, key = merged["superres"], f"datasets.{name}.superres"
    metrics = merged["evaluate"]["metrics"]
    if superres is None:
        for metric in ("psnr", "ssim"):
            if metric in metrics:
                raise ConfigError(
                    f"config key '{setting_key(config, name, 'evaluate', 'metrics')}': '{metric}' scores super-resolution "
                    f"against the truth; add '{key}' or drop it"
                )
        return
    if merged["kind"] != "images":
        raise ConfigError(f"config key '{key}': '{name}' holds points; super-resolution needs an image set")
    if merged["conditional"] is not None:
        raise ConfigError(f"config key '{key}': 'conditional' and 'superres' exclude each other; keep one")
    if merged["model"]["kind"] != "unet":
        raise ConfigError(f"config key '{key}': the low-resolution condition enters a UNet; set model.kind 'unet'")
    if merged["potential"].get("pca_dim") is not None:
        raise ConfigError(f"config key '{key}': a PCA potential (potential.pca_dim) does not pair on the "
                          f"low-resolution condition; drop one of them")
    side = IMAGE_SIDES.get(merged["source"])
    if merged["source"] == "image_folder":
        side = merged["options"].get("resolution", dataset_options("image_folder").get("resolution"))
    if isinstance(side, int) and side % superres["factor"]:
        raise ConfigError(
            f"config key '{key}.factor': {superres['factor']} does not divide the {side}x{side} images of "
            f"'{name}'; use a divisor of {side}"
        )
