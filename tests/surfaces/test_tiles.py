"""Default tile sizes of surfaces (tracker.surfaces.rows.default_tile)."""

from __future__ import annotations


def test_cheap_surfaces_get_larger_tiles_and_expensive_ones_the_default():
    from tracker.surfaces.rows import default_tile

    assert default_tile(51, 51) == (13, 13)
    assert default_tile(51, None) == (26, 1)
    expensive = 50_000 * 853_018  # ResNet-56 on the CIFAR-10 train split
    assert default_tile(51, 51, expensive) == (13, 13)
    cheap = 128 * 17_610  # an MLP on one 128-sample minibatch: ~890 points per tile
    tx, ty = default_tile(51, 51, cheap)
    assert tx == ty == 26 and tx * ty <= 4096
    assert default_tile(401, 401, 1.0) == (58, 58)  # capped at 4,096 points (64x64, balanced)
    assert default_tile(1001, None, 1.0) == (251, 1)  # 1D: at most 256
