"""Importing surfaces computed elsewhere (Goldstein's loss-landscape h5 files)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import sqlalchemy as sa

from tracker._arrays import add_array
from tracker._db import Database, utcnow
from tracker._exceptions import SpecError
from tracker._landscape import surface_dir
from tracker._queue import get_or_create_study
from tracker._schema import Surface
from tracker._store import ArrayStore


def _uniform(values: np.ndarray, name: str) -> tuple[float, float, int]:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise SpecError(f"the file's {name} is empty: it holds no surface")
    if values.size > 1:
        expected = np.linspace(values[0], values[-1], values.size)
        if not np.allclose(values, expected, rtol=1e-6, atol=1e-9) or values[-1] <= values[0]:
            raise SpecError(f"the file's {name} are not an increasing even grid: cannot import it")
    return float(values[0]), float(values[-1]), int(values.size)


def import_h5(
    db: Database, store_url: str, content: dict[str, Any], *, study: str, source: str
) -> int:
    """Write a surface row (with summaries) and its arrays; return the surface id."""
    from compute.summary import summarize

    xs, ys = content["xs"], content.get("ys")
    loss = np.asarray(content["loss"], dtype=np.float32)
    acc = content.get("acc")
    acc = np.full_like(loss, np.nan) if acc is None else np.asarray(acc, dtype=np.float32)
    x_min, x_max, nx = _uniform(xs, "xcoordinates")
    y_min = y_max = ny = None
    if ys is not None:
        y_min, y_max, ny = _uniform(ys, "ycoordinates")
    if loss.shape != (1, ny or 1, nx):
        raise SpecError(f"the file's train_loss has shape {loss.shape[1:]}, the coordinates say {(ny or 1, nx)}")  # fmt: skip
    digest = hashlib.sha256(
        b"import-h5" + study.encode() + loss.tobytes() + np.asarray(xs).tobytes()
        + (np.asarray(ys).tobytes() if ys is not None else b"")
    ).hexdigest()  # fmt: skip
    store = ArrayStore(store_url)
    with db.session() as session:
        existing = session.scalar(sa.select(Surface).where(Surface.spec_hash == digest))
        if existing is not None:
            return existing.id
        st = get_or_create_study(session, study)
        summary = summarize(np.asarray(xs), None if ys is None else np.asarray(ys), loss)
        surface = Surface(
            study_id=st.id, spec_hash=digest, checkpoint_id=None, x_direction_id=None,
            x_min=x_min, x_max=x_max, nx=nx, y_min=y_min, y_max=y_max, ny=ny, tile_nx=nx,
            tile_ny=ny, split=str(content.get("split", "train")), bn_mode="eval",
            metrics=["loss"] + (["acc"] if content.get("acc") is not None else []),
            eval_config={"imported": True}, source=source[:500], **summary,
        )  # fmt: skip
        session.add(surface)
        session.flush()
        # The arrays go in before the commit that makes the row visible.
        for name, data, column in (("loss", loss, "loss_array_id"), ("acc", acc, "acc_array_id")):
            spec = store.write(f"{surface_dir(surface)}/{name}", data, chunks=data.shape)
            setattr(surface, column, add_array(session, spec).id)
        surface.completed_at = session.scalar(sa.select(utcnow()))
        return surface.id
