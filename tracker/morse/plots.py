"""Figures of a Morse graph (seed 003's Figures 3 and 5): the graph drawn by Graphviz, the Morse
sets and the order retraction with the ensemble's early weights overlaid, and violins of the
models' balanced accuracy and prediction entropy per Morse node.

Node ``i`` has the same colour in every figure. Retraction values below zero are not nodes:
-1 none reachable (white), -2 ambiguous (grey), -3 not computed (grey hatch-free). Figures are
built on ``matplotlib.figure.Figure`` (no pyplot, no GUI backend).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from tracker._exceptions import ConfigError

# tab20's colours, darker shades first: 20 nodes before a colour repeats.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf", "#393b79", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
           "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#637939")  # fmt: skip
SPECIAL = {-1: ("none", "#ffffff"), -2: ("ambiguous", "#b0b0b0"), -3: ("not computed", "#d9d9d9")}


def node_colour(node: int) -> str:
    if node < 0:
        return SPECIAL.get(node, ("", "#ffffff"))[1]
    return PALETTE[node % len(PALETTE)]


def dot_source(graph: dict[str, Any]) -> str:
    """The Morse graph in Graphviz's language: the one drawing of it, for the files and the
    dashboard. Node ``i`` has its figure colour and its Conley index in the label (a trivial
    one dashed, "trivial" in the label); attractors are double circles on one rank at the
    bottom; edges run from higher to lower nodes.

    Nodes may be dicts (as stored) or bare ids, edges pairs or ``{"source", "target"}`` dicts.
    """
    nodes = [n if isinstance(n, dict) else {"id": n} for n in graph.get("nodes", [])]
    lines = ["digraph morse {", "  node [shape=ellipse, style=filled];"]
    for node in nodes:
        label = str(node["id"])
        if node.get("conley_index"):
            label += " : (" + ", ".join(node["conley_index"]) + ")"
        shape = "doublecircle" if node.get("attractor") else "ellipse"
        # A trivial Conley index: a spurious recurrent set of the outer approximation, drawn
        # dashed and said in the label.
        style = ' [style="filled,dashed"]' if node.get("trivial") else ""
        if node.get("trivial"):
            label += " trivial"
        # The shape in an attribute list of its own (DOT allows several after a node).
        lines.append(f'  "{node["id"]}" [shape={shape}]{style} '
                     f'[label="{label}", fillcolor="{node_colour(int(node["id"]))}"];')  # fmt: skip
    attractors = [f'"{n["id"]}"' for n in nodes if n.get("attractor")]
    if attractors:
        lines.append("  { rank=same; " + " ".join(attractors) + " }")
    for edge in graph.get("edges", []):
        u, v = (edge["source"], edge["target"]) if isinstance(edge, dict) else edge[:2]
        lines.append(f'  "{u}" -> "{v}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_dot(source: str, stem: Path) -> list[Path]:
    """Write ``stem``.dot and render it to PNG and PDF with Graphviz's ``dot``."""
    dot = shutil.which("dot")
    if dot is None:
        raise ConfigError("Graphviz's `dot` is not installed: install graphviz (apt install graphviz)")  # fmt: skip
    stem.parent.mkdir(parents=True, exist_ok=True)
    src = Path(f"{stem}.dot")
    src.write_text(source)
    paths = []
    for fmt in ("png", "pdf"):
        path = Path(f"{stem}.{fmt}")
        subprocess.run([dot, f"-T{fmt}", str(src), "-o", str(path)], check=True,
                       capture_output=True)  # fmt: skip
        paths.append(path)
    return paths


def _raster_rgb(raster: np.ndarray) -> np.ndarray:
    from matplotlib.colors import to_rgb

    out = np.ones((*raster.shape, 3))
    for value in np.unique(raster):
        out[raster == value] = to_rgb(node_colour(int(value)))
    return out


def point_nodes(data: dict[str, Any], points: np.ndarray) -> np.ndarray:
    """The retraction's value at each point (the box it lies in); -1 outside the domain."""
    from compute.morse import raster_at

    graph = data["graph"]
    return raster_at(data["retraction"], graph["lo"], graph["hi"], points).astype(np.int64)


def project(raster: np.ndarray) -> np.ndarray:
    """A raster of K > 2 weights seen on the first two: each (x, y) column shows the lowest
    node met along the other axes, or the first non-node value where it meets none."""
    if raster.ndim <= 2:
        return raster
    flat = raster.reshape(-1, *raster.shape[-2:])
    nodes = np.where(flat >= 0, flat, np.iinfo(np.int32).max).min(axis=0)
    return np.where(nodes == np.iinfo(np.int32).max, flat[0], nodes).astype(raster.dtype)


def figure_sets(data: dict[str, Any]) -> Any:
    """Morse sets (left) and the order retraction (right), early weights coloured by node."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    graph = data["graph"]
    extent = (graph["lo"][0], graph["hi"][0], graph["lo"][1], graph["hi"][1])
    early = data["early"]
    nodes = point_nodes(data, early)
    sets, retraction = project(data["morse_sets"]), project(data["retraction"])
    seen = "" if data["morse_sets"].ndim <= 2 else f", {data['morse_sets'].ndim} weights seen on the first two"
    fig = Figure(figsize=(11, 5), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (("Morse sets", sets), ("order retraction", retraction))
    for ax, (title, raster) in zip(axes, panels, strict=True):
        ax.imshow(_raster_rgb(raster), origin="lower", extent=extent, aspect="auto",
                  interpolation="nearest")  # fmt: skip
        ax.scatter(early[:, 0], early[:, 1], c=[node_colour(int(n)) for n in nodes], s=14,
                   edgecolors="black", linewidths=0.5, zorder=3)  # fmt: skip
        ax.set_title(f"{title} (Morse graph {data['id']}, subdiv {data['subdiv']}{seen})")
        ax.set_xlabel(data["weight_names"][0])
        ax.set_ylabel(data["weight_names"][1])
    # Only the values drawn get a legend entry, outside the axes: a graph may have dozens of
    # one-box nodes.
    shown = sorted({int(v) for v in np.unique(retraction)}
                   | {int(v) for v in np.unique(sets)}, key=lambda v: (v < 0, v))  # fmt: skip
    handles = [Patch(facecolor=node_colour(v), edgecolor="black",
                     label=f"node {v}" if v >= 0 else SPECIAL.get(v, ("?", ""))[0])
               for v in shown if v >= 0 or v in SPECIAL]  # fmt: skip
    fig.legend(handles=handles, loc="outside right upper", fontsize="small",
               ncols=max(1, -(-len(handles) // 18)))  # fmt: skip
    return fig


def region_groups(data: dict[str, Any]) -> list[tuple[int, np.ndarray]]:
    """(node, indices of the models whose early weights retract to it), nodes in order."""
    nodes = point_nodes(data, data["early"])
    return [(int(v), np.flatnonzero(nodes == v)) for v in sorted(set(nodes.tolist()), key=lambda v: (v < 0, v))]  # fmt: skip


def figure_violins(data: dict[str, Any]) -> Any:
    """Balanced accuracy and prediction entropy of the models in each node's region."""
    from matplotlib.figure import Figure

    groups = region_groups(data)
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    labels = [(f"node {v}" if v >= 0 else SPECIAL.get(v, ("?", ""))[0]) + f"\n({len(ix)})"
              for v, ix in groups]  # fmt: skip
    for ax, key, title in ((axes[0], "accuracy", "balanced accuracy (test)"),
                           (axes[1], "entropy", "prediction entropy (test, nats)")):  # fmt: skip
        values = [data[key][ix] for _, ix in groups]
        values = [v[np.isfinite(v)] for v in values]
        drawn = [i for i, v in enumerate(values) if len(v) > 0]
        if drawn:
            parts = ax.violinplot([values[i] for i in drawn], positions=drawn, showmedians=True)
            for body, i in zip(parts["bodies"], drawn, strict=True):
                body.set_facecolor(node_colour(groups[i][0]))
                body.set_edgecolor("black")
                body.set_alpha(0.8)
        else:  # e.g. an ensemble of a study's models: their members carry no such metric
            ax.text(0.5, 0.5, f"no {key} recorded for these models", transform=ax.transAxes,
                    ha="center", va="center", color="0.4")  # fmt: skip
        ax.set_xticks(range(len(groups)), labels)
        ax.set_title(title)
    fig.suptitle(
        f"models by the Morse node their early weights retract to (Morse graph {data['id']})"
    )
    return fig


def plot_all(data: dict[str, Any], stem: Path) -> list[Path]:
    """Write ``stem``-graph, -sets and -violins as PNG and PDF; return the paths."""
    from tracker._figures import save_figure

    written = render_dot(dot_source(data["graph"]), Path(f"{stem}-graph"))
    written += save_figure(figure_sets(data), f"{stem}-sets")
    written += save_figure(figure_violins(data), f"{stem}-violins")
    return written
