"""`seeds` in a study file's [[surface]]: one surface per x-direction seed."""

from __future__ import annotations

import pytest

from tracker import studyfile
from tracker._exceptions import SpecError

HEAD = """
study = "s"
[[model]]
name = "m"
architecture = "mlp"
dataset = "digits"
lr = 0.1
batch_size = 32
epochs = 1
"""


def _load(tmp_path, surface: str):
    path = tmp_path / "study.toml"
    path.write_text(HEAD + "[[surface]]\n" + surface)
    return studyfile.load(path)


def test_seeds_make_one_surface_per_x_direction_seed(tmp_path):
    one_d = _load(tmp_path, 'x = "-1:1:5"\nseeds = "0-4"\n')
    assert [s.x_direction.seed for s in one_d.surfaces] == [0, 1, 2, 3, 4]
    two_d = _load(tmp_path, 'x = "-1:1:5"\ny = "-1:1:5"\nseeds = [0, 2, 4]\n')
    assert [(s.x_direction.seed, s.y_direction.seed) for s in two_d.surfaces] == [(0, 1), (2, 3), (4, 5)]


@pytest.mark.parametrize(
    ("surface", "needle"),
    [('x = "-1:1:5"\ny = "-1:1:5"\nseeds = "0-2"\n', "two apart"),
     ('x = "-1:1:5"\nseeds = "0-2"\npairs = 2\n', "drop pairs"),
     ('x = "-1:1:5"\nseeds = "0-2"\ndirection = { seed = 3 }\n', "direction seed"),
     ('x = "-1:1:5"\nseeds = "a-b"\n', "not a list like 0-3")],
)  # fmt: skip
def test_bad_seeds_are_one_clear_error(tmp_path, surface, needle):
    with pytest.raises(SpecError, match=needle):
        _load(tmp_path, surface)
