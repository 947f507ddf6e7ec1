"""Summary figures of a finished surface, as columns SQL can filter and compare on.

Coordinates are in the units of the directions: for filter-normalised directions a radius of
1.0 is a step as long as each filter's own norm. Surfaces with several evaluation groups
(minibatches) are summarised on the mean over groups.
"""

from __future__ import annotations

import math

import numpy as np

RADII = (0.25, 0.5, 1.0)
FLATNESS_RISE = 0.1
_ANGLES = 64


def _interp_1d(xs: np.ndarray, z: np.ndarray, x: float) -> float:
    if x < xs[0] - 1e-12 or x > xs[-1] + 1e-12:
        return math.nan
    if len(xs) == 1:
        return float(z[0])
    return float(np.interp(x, xs, z))


def _interp_2d(xs: np.ndarray, ys: np.ndarray, z: np.ndarray, x: float, y: float) -> float:
    """Bilinear interpolation of z[ny, nx] at (x, y); NaN outside the grid."""
    if not (xs[0] - 1e-12 <= x <= xs[-1] + 1e-12 and ys[0] - 1e-12 <= y <= ys[-1] + 1e-12):
        return math.nan
    if len(xs) == 1 or len(ys) == 1:
        if len(xs) == 1 and len(ys) == 1:
            return float(z[0, 0])
        if len(ys) == 1:
            return _interp_1d(xs, z[0], x)
        return _interp_1d(ys, z[:, 0], y)
    i = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2))
    j = int(np.clip(np.searchsorted(ys, y) - 1, 0, len(ys) - 2))
    tx = (x - xs[i]) / (xs[i + 1] - xs[i])
    ty = (y - ys[j]) / (ys[j + 1] - ys[j])
    z00, z01, z10, z11 = z[j, i], z[j, i + 1], z[j + 1, i], z[j + 1, i + 1]
    return float((1 - ty) * ((1 - tx) * z00 + tx * z01) + ty * ((1 - tx) * z10 + tx * z11))


def summarize(xs: np.ndarray, ys: np.ndarray | None, loss: np.ndarray) -> dict[str, float | None]:
    """Centre value, minimum, mean rise at radii 0.25/0.5/1.0 and flatness width.

    ``loss`` is [G, ny, nx] (ny = 1 and ``ys`` None for a 1D surface).
    - centre_loss: the loss at coordinate 0 (interpolated if 0 is not a grid point).
    - min_loss, min_x, min_y: the smallest finite value and where it is.
    - rise_rXXX: mean over the circle of radius r (64 angles; in 1D the two points +-r) of
      loss - centre_loss, using the points of the circle that lie on the grid; None if none do.
    - flatness_width: the distance from the centre to the nearest grid point whose loss is not
      below centre + 0.1 (NaN and inf count as above); if no such point, the largest radius
      the grid covers in every direction (a lower bound).
    """
    xs = np.asarray(xs, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    raw = loss.mean(axis=0) if loss.ndim == 3 else loss  # NaN and inf propagate
    z = np.where(np.isfinite(raw), raw, np.nan)
    two_d = ys is not None
    # A 1D surface has one row of y: its coordinate is 0 and never read as a y.
    ys = np.asarray(ys, dtype=np.float64) if ys is not None else np.zeros(1)
    if two_d:
        centre = _interp_2d(xs, ys, z, 0.0, 0.0)
    else:
        z = z.reshape(-1)
        raw = raw.reshape(-1)
        centre = _interp_1d(xs, z, 0.0)
    out: dict[str, float | None] = {"centre_loss": None if math.isnan(centre) else centre}

    finite = np.isfinite(z)
    if finite.any():
        flat_idx = int(np.nanargmin(np.where(finite, z, np.inf)))
        if two_d:
            j, i = np.unravel_index(flat_idx, z.shape)
            out.update(min_loss=float(z[j, i]), min_x=float(xs[i]), min_y=float(ys[j]))
        else:
            out.update(min_loss=float(z[flat_idx]), min_x=float(xs[flat_idx]), min_y=None)
    else:
        out.update(min_loss=None, min_x=None, min_y=None)

    for r, key in zip(RADII, ("rise_r025", "rise_r050", "rise_r100"), strict=True):
        if math.isnan(centre):
            out[key] = None
            continue
        if two_d:
            angles = np.linspace(0.0, 2 * math.pi, _ANGLES, endpoint=False)
            vals = [_interp_2d(xs, ys, z, r * math.cos(a), r * math.sin(a)) for a in angles]
        else:
            vals = [_interp_1d(xs, z, -r), _interp_1d(xs, z, r)]
        vals = [v for v in vals if not math.isnan(v)]
        out[key] = float(np.mean(vals) - centre) if vals else None

    if math.isnan(centre):
        out["flatness_width"] = None
        return out
    if two_d:
        gx, gy = np.meshgrid(xs, ys)
        dist = np.hypot(gx, gy)
        reach = min(-xs[0], xs[-1], -ys[0], ys[-1])
    else:
        dist = np.abs(xs)
        reach = min(-xs[0], xs[-1])
    above = ~(raw < centre + FLATNESS_RISE)
    out["flatness_width"] = float(dist[above].min()) if above.any() else float(max(reach, 0.0))
    return out
