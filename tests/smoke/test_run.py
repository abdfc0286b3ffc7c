"""smoke-config's stand-ins per config and its one-line errors (the runs themselves: tests/workflow/test_smoke_configs.py)."""

import yaml

from sdfm.cli import main
from sdfm.smoke.run import write_standins


def test_one_standin_per_distinct_path_in_the_format_of_its_source(tmp_path):
    config = {"datasets": {
        "a": {"source": "imagenet32", "options": {"path": "/data/in32"}},
        "b": {"source": "imagenet32", "options": {"path": "/data/in32"}, "conditional": {"beta": 1.0}},
        "faces": {"source": "image_folder", "options": {"path": "/data/celeba"}, "superres": {"factor": 4, "beta": 1}},
        "pets": {"source": "image_folder", "options": {"path": "/data/pets"}},
        "c10": {"source": "cifar10", "options": {"path": "/data/cifar"}},
        "digits": {"source": "digits"},
    }}
    paths, inception = write_standins(config, tmp_path)
    assert sorted(paths) == ["/data/celeba", "/data/cifar", "/data/in32", "/data/pets"] and inception is None
    assert sorted(p.name for p in (tmp_path / paths["/data/in32"]).iterdir())[-1] == "val_data.npz"
    celeba = tmp_path / paths["/data/celeba"]
    assert not [p for p in celeba.iterdir() if p.is_dir()] and len(list(celeba.glob("*.jpg"))) == 24  # flat
    assert sorted(p.name for p in (tmp_path / paths["/data/pets"]).iterdir() if p.is_dir()) == ["cat", "dog"]
    assert (tmp_path / paths["/data/cifar"] / "cifar-10-batches-py" / "test_batch").is_file()


def test_a_bad_config_stops_in_one_line_before_any_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"datasets": {"a": {"source": "moons", "options": {"n_pts": 3}}}}))
    for config, what in ((bad, "n_pts"), (tmp_path / "missing.yaml", "does not exist")):
        assert main(["smoke-config", str(config), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and what in err, err
    assert not (tmp_path / "out" / "config.yaml").exists()
