"""Property-based fuzzing of what a user types: study files and the CLI's grid/flag parsers.

Every generated input must be accepted, or refused with a TrackerError whose message is one
line. Any other exception (a traceback for the user) fails the test. Examples are seeded by
hypothesis's database-free derandomised mode so CI runs the same inputs every time.
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.levelset import parse_lambdas
from tracker._exceptions import TrackerError
from tracker.studyfile import (
    DIRECTION_KEYS,
    ENSEMBLE_KEYS,
    INTERP_KEYS,
    MODEL_KEYS,
    MORSE_KEYS,
    PCA_KEYS,
    RETRAIN_KEYS,
    SURFACE_KEYS,
    TOPOLOGY_KEYS,
    load,
)
from tracker.surfaces.cli import parse_tile
from tracker.surfaces.rows import parse_grid
from tracker.topology.rows import parse_seeds, parse_steps

FUZZ = settings(max_examples=400, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
COUNTS: dict[str, int] = {}


def _accepted_or_one_line(name: str, fn: Any, *args: Any) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1
    try:
        fn(*args)
    except TrackerError as err:
        text = str(err)
        assert text and "\n" not in text, repr(text)


# --- values and TOML -------------------------------------------------------------------------

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**63, 1e308, -1e308, 1e-320, 0.5, 1000000000]),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["-1:1:5", "-1:1:0", "1:-1:3", "nan:1:3", "0:1:1000000000", "x", "0-3",
                     "0-999999999", "0.25,0.5", "final", "filter", "biasbn", "train", "mlp",
                     "digits", "iris", "sgd", "16x16", "2x2x2", "mlp-bs{batch_size}", "{nope}"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(string.ascii_lowercase + "_", min_size=1,
                                                    max_size=8), inner, max_size=3)),
    max_leaves=8,
)  # fmt: skip


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"


def _table(keys: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    known = sorted(keys)
    return st.dictionaries(
        st.one_of(st.sampled_from(known), st.text(string.ascii_lowercase, min_size=1, max_size=6)),
        values, max_size=6,
    )  # fmt: skip


SECTION_KEYS = {"model": MODEL_KEYS, "surface": SURFACE_KEYS | {"direction"},
                "interpolation": INTERP_KEYS, "pca": PCA_KEYS, "retrain": RETRAIN_KEYS,
                "topology": TOPOLOGY_KEYS, "direction": DIRECTION_KEYS,
                "ensemble": ENSEMBLE_KEYS, "morse": MORSE_KEYS}  # fmt: skip

documents = st.fixed_dictionaries(
    {"study": st.one_of(st.just("fuzz"), values)},
    optional={
        "description": values,
        **{name: st.lists(_table(keys), max_size=3) for name, keys in SECTION_KEYS.items()
           if name != "direction"},
        "stray": values,
    },
)  # fmt: skip


def _render(doc: dict[str, Any]) -> str:
    lines = []
    for key, value in doc.items():
        if isinstance(value, list) and value and all(isinstance(t, dict) for t in value):
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    for key, value in doc.items():
        if isinstance(value, list) and value and all(isinstance(t, dict) for t in value):
            for table in value:
                lines.append(f"[[{key}]]")
                lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


@FUZZ
@given(doc=documents)
def test_generated_study_files_are_accepted_or_refused_in_one_line(doc, tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(_render(doc))
    _accepted_or_one_line("study files", load, path)


VALID = {
    "study": "fuzz",
    "model": [{"name": "m{batch_size}", "architecture": "mlp", "arch": {"widths": [8]},
               "dataset": "iris", "lr": 0.1, "batch_size": [16, 32], "epochs": 2, "seed": 0}],
    "surface": [{"x": "-1:1:5", "y": "-1:1:5", "pairs": 1, "direction": {"seed": 0},
                 "tile": [4, 4]}],
    "interpolation": [{"from": "m16", "to": "m32", "x": "-0.5:1.5:5"}],
    "retrain": [{"model": "m16", "seeds": "0-1", "steps": [0.5], "epochs": 1}],
    "topology": [{"model": "m16"}],
    "ensemble": [{"name": "e", "setup": "doodl3-iris", "models": 3, "epochs": 2,
                  "early_epoch": 1}],
    "morse": [{"ensemble": "e", "weights": ["dense_kernel_0_1", 5], "subdiv": 6}],
}  # fmt: skip


@st.composite
def near_valid(draw: Any) -> dict[str, Any]:
    """A valid study file with one to three values replaced: the parser's deep checks."""
    doc = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from([k for k in doc if k != "study"]))
        table = doc[section][0]
        key = draw(st.sampled_from(sorted(SECTION_KEYS[section] | set(table))))
        table[key] = draw(values)
    return doc


@FUZZ
@given(doc=near_valid())
def test_near_valid_study_files_are_accepted_or_refused_in_one_line(doc, tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(_render(doc))
    _accepted_or_one_line("near-valid study files", load, path)


def test_the_unmutated_study_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(_render(VALID))
    study = load(path)
    assert len(study.models) == 2 and len(study.surfaces) == 3 and len(study.retrains) == 1
    assert len(study.ensembles) == len(study.morse) == 1


@FUZZ
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_as_a_study_file_are_refused_in_one_line(data, tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_bytes(data)
    _accepted_or_one_line("study-file bytes", load, path)


grid_text = st.one_of(
    st.text(max_size=24),
    st.builds(lambda a, b, n: f"{a}:{b}:{n}", scalars, scalars, scalars),
    st.integers(), st.floats(),
)  # fmt: skip


@FUZZ
@given(text=grid_text)
def test_grid_parser(text) -> None:
    _accepted_or_one_line("grids", parse_grid, text, "--x grid")


@FUZZ
@given(text=st.one_of(st.text(max_size=16), st.builds(lambda a, b: f"{a}x{b}", scalars, scalars)))
def test_tile_flag(text) -> None:
    _accepted_or_one_line("--tile", parse_tile, text)


@FUZZ
@given(text=st.one_of(st.text(max_size=24), st.builds(lambda a, b: f"{a}-{b}", scalars, scalars)))
def test_seed_and_step_lists(text) -> None:
    _accepted_or_one_line("--seeds", parse_seeds, text)
    _accepted_or_one_line("--steps", parse_steps, text)
    _accepted_or_one_line("--lambdas", parse_lambdas, text)


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    print(f"\nfuzzed inputs: {COUNTS}")
