"""How fast the dashboard opens and shows its pages, against issue 19's targets.

A temporary TRACKER_HOME gets four seeded GRIDxGRID surfaces (101x101 by default) through
the real import path (Goldstein .h5 files -> ``tracker.surfaces.rows.import_h5``: rows, summaries
and Zarr arrays). Then:

  (a) AppTest (the server side of a page load, in-process): the Surfaces page with the four
      selected, per view (heatmap, contour, the 3D image, the interactive 3D scene), with the dashboard's caches emptied (cold:
      queries, Zarr reads, figures) and kept (warm: a re-run after a widget change); the
      first run in a fresh process (imports included) apart.
  (b) Chromium (headless, /usr/bin/chromium, Playwright), per repeat a fresh `tracker
      dashboard --headless` and a fresh browser profile:
      - start: from launching the command to the Overview drawn, beside the same for the
        app's Streamlit process alone (`python -m streamlit run app.py`, the baseline);
      - every page cold (its first visit on the fresh server, in a new tab: the browser has
        Streamlit's scripts from the first page, as a user's has), warm in a new tab (the
        page again), and warm by its sidebar link in one tab (how a user moves between pages);
      - the 3D view of the four surfaces, each variant the page offers: the default image
        (/surfaces?view=3D) and the interactive Plotly scene (/surfaces?view=3D&rotate=1),
        cold and warm in a new tab, and switched to in the same tab (heatmap -> 3D image by
        the view radio, then the image -> the scene by the "interactive" toggle);
      - the floor: a Streamlit page holding only a title, opened again in a new tab (what
        Streamlit's own page costs in this browser, whatever the app does).
      A page is drawn when Streamlit's script state is "notRunning", its title is shown, its
      Plotly charts and images are drawn and two animation frames have passed (the 3D scene's
      WebGL drawing included). Each figure is printed as min / median / max over ``--repeat``
      passes beside its target: start 3 s, every page 1 s warm, the 3D view 3 s.

Timings on a shared machine are noisy: the load average is printed with the figures.
Run: ``.venv/bin/python -m benchmarks.dashboard [--grid 101] [--repeat 3] [--no-browser]
[--browser-only]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# `python benchmarks/dashboard.py` puts benchmarks/ first on sys.path, where queue.py would
# shadow the standard library's `queue` (Streamlit's script thread pool imports it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

APP = REPO / "dashboard" / "app.py"
# The Surfaces page's views; "3D" is the server-drawn image (the default 3D view),
# "3D interactive" the Plotly scene its toggle loads.
VIEWS = ("heatmap", "contour", "3D", "3D interactive")


def seed_surfaces(home: Path, grid: int, count: int = 4, seed: int = 0) -> list[int]:
    """``count`` seeded GRIDxGRID surfaces imported into a fresh tracker home; their ids."""
    from tracker._config import resolve
    from tracker._db import open_database
    from tracker._migrate import upgrade
    from tracker.surfaces import formats
    from tracker.surfaces.rows import import_h5

    settings = resolve(home=home)
    home.mkdir(parents=True, exist_ok=True)
    db = open_database(settings.db_url, check=False)
    upgrade(db, "head")
    rng = np.random.default_rng(seed)
    xs = ys = np.linspace(-1.0, 1.0, grid)
    gx, gy = np.meshgrid(xs, ys)
    ids = []
    for i in range(count):
        # A tilted bowl with ripples and noise: every surface differs, values like a loss.
        a, b = rng.uniform(0.5, 3.0, size=2)
        loss = a * gx**2 + b * gy**2 + 0.1 * np.sin(6 * gx + i) + 0.02 * rng.random(gx.shape)
        acc = np.clip(1.0 - loss / loss.max(), 0, 1)
        path = home / f"surface{i}.h5"
        formats.write_h5(path, xs, ys, loss[None], acc[None])
        content = formats.read_h5(path)
        ids.append(import_h5(db, settings.store_url, content, study="bench", source=str(path)))
    db.dispose()
    return ids


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("TRACKER_DB_URL", "TRACKER_STORE", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    env["TRACKER_HOME"] = str(home)
    return env


def apptest_times(
    home: Path, repeat: int
) -> tuple[float, dict[str, tuple[list[float], list[float]]]]:
    """The first page run in this process (imports and first figure included), then per view
    ``repeat`` runs with the dashboard's caches emptied (cold) and kept (warm)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ.update(_env(home))

    def page() -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.switch_page("views/surfaces.py")
        return at

    at = page()
    start = time.perf_counter()
    at.run()
    first = time.perf_counter() - start
    _check(at, "heatmap")
    results = {}
    for view in VIEWS:
        cold, warm = [], []
        for _ in range(repeat):
            at = page()
            if view != "heatmap":
                at.session_state["view"] = view.split()[0]
            if view == "3D interactive":
                at.session_state["rotate"] = True
            st.cache_data.clear()
            st.cache_resource.clear()
            start = time.perf_counter()
            at.run()
            cold.append(time.perf_counter() - start)
            _check(at, view)
            start = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - start)
            _check(at, view)
        results[view] = (cold, warm)
    return first, results


def _check(at: object, view: str) -> None:
    """The run drew the four surfaces without an error (a fast empty page proves nothing)."""
    import json

    if at.exception or at.error:  # type: ignore[attr-defined]
        raise SystemExit(f"the Surfaces page failed: {at.exception or at.error}")  # type: ignore[attr-defined]
    if view != "3D interactive":  # one image of the four (captioned with their labels)
        images = at.get("image")  # type: ignore[attr-defined]
        captions = images[0].proto.imgs[0].caption.split(" · ") if images else []
        if len(captions) != 4:
            raise SystemExit(f"expected an image of four {view}s, the page shows {captions}")
        return
    side = json.loads(at.get("plotly_chart")[0].proto.spec)  # type: ignore[attr-defined]
    kinds = [t["type"] for t in side["data"]]
    if kinds != ["surface"] * 4:
        raise SystemExit(f"expected four surface traces, the page drew {kinds}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(home: Path, server: str = "tracker", started: list[float] | None = None) -> Iterator[str]:
    """A dashboard server on a free port until the block ends; its base URL. ``server``:
    "tracker" (`tracker dashboard --headless`), "streamlit" (the app's Streamlit process
    alone, `python -m streamlit run`: the baseline without the tracker's database check and
    warm-up) or "empty" (the same Streamlit flags on a page holding only a title: what
    Streamlit's own page costs). ``started`` gets the launch time (time.perf_counter)."""
    port = _free_port()
    command = [sys.executable, "-m", "tracker.cli", "dashboard", "--port", str(port), "--headless"]
    if server != "tracker":
        import argparse as _argparse

        from tracker._cmd_dashboard import streamlit_argv

        command = streamlit_argv(_argparse.Namespace(address="127.0.0.1", port=port))
        if server == "empty":
            empty = home.parent / "empty_app.py"
            empty.write_text('import streamlit as st\n\nst.title("Empty")\n')
            command[4] = str(empty)
    if started is not None:
        started.append(time.perf_counter())
    proc = subprocess.Popen(
        command, env=_env(home), cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"`{' '.join(command[2:4])}` did not start") from None
                time.sleep(0.05)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


# (url path, the page's title): every page of dashboard/app.py.
PAGES = [("", "Overview"), ("models", "Models"), ("surfaces", "Surfaces"),
         ("topology", "Topology"), ("levelsets", "Level sets"), ("morse", "Morse graphs"),
         ("curvature", "Curvature"), ("meta", "Meta-analysis")]  # fmt: skip
START_TARGET_S, PAGE_TARGET_S, VIEW_3D_TARGET_S = 3.0, 1.0, 3.0
# Every 3D variant of the Surfaces page: (figure name, query string, a WebGL scene is drawn).
VARIANTS_3D = [("3D view (image, default)", "view=3D", False),
               ("3D view (interactive)", "view=3D&rotate=1", True)]  # fmt: skip
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
TIMEOUT_MS = 180_000

# The script run is over, the page's title is shown, its charts and images are drawn.
DRAWN = """([title, scene]) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const h1 = document.querySelector('[data-testid="stMain"] h1');
  if (!h1 || !h1.textContent.includes(title)) return false;
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  if (scene && !plots.some(p => p.querySelector('canvas'))) return false;
  if (!plots.every(p => p.querySelector('.main-svg'))) return false;
  const imgs = [...document.querySelectorAll('[data-testid="stMain"] img')];
  return imgs.every(i => i.complete && i.naturalWidth > 0);
}"""
# Two animation frames and a task later: what was drawn (WebGL included) is on the screen.
PAINTED = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 0))))"


def _drawn(page: Any, title: str, scene: bool = False) -> None:
    page.wait_for_function(DRAWN, arg=[title, scene], timeout=TIMEOUT_MS, polling=50)
    page.evaluate(PAINTED)
    if page.locator('[data-testid="stException"]').count():
        raise SystemExit(f"the dashboard shows an error on the {title} page")


def _open(context: Any, url: str, title: str, scene: bool = False) -> float:
    """Seconds from opening ``url`` in a new tab of ``context`` to the page drawn."""
    page = context.new_page()
    try:
        start = time.perf_counter()
        page.goto(url, wait_until="commit")
        _drawn(page, title, scene)
        return time.perf_counter() - start
    finally:
        page.close()


def _new_context(browser: Any) -> Any:
    return browser.new_context(viewport={"width": 1400, "height": 1000})


def browser_pass(browser: Any, home: Path) -> dict[str, float]:
    """One pass on fresh servers and a fresh browser profile; seconds per figure."""
    out: dict[str, float] = {}
    for key, server in (("start: streamlit run (baseline)", "streamlit"),
                        ("start: tracker dashboard", "tracker")):  # fmt: skip
        context = _new_context(browser)
        launched: list[float] = []
        with serve(home, server, launched) as base:
            page = context.new_page()
            page.goto(f"{base}/", wait_until="commit")
            _drawn(page, "Overview")
            out[key] = time.perf_counter() - launched[0]
            page.close()
            if server != "tracker":
                context.close()
                continue
            for path, title in PAGES[1:]:
                out[f"cold: {title}"] = _open(context, f"{base}/{path}", title)
            for key, query, scene in VARIANTS_3D:
                out[f"cold: {key}"] = _open(context, f"{base}/surfaces?{query}", "Surfaces", scene)
            for path, title in PAGES:
                out[f"warm, new tab: {title}"] = _open(context, f"{base}/{path}", title)
            for key, query, scene in VARIANTS_3D:
                out[f"warm, new tab: {key}"] = _open(context, f"{base}/surfaces?{query}",
                                                     "Surfaces", scene)  # fmt: skip
            page = context.new_page()
            page.goto(f"{base}/", wait_until="commit")
            _drawn(page, "Overview")
            for path, title in [*PAGES[1:], PAGES[0]]:
                link = page.locator(f'[data-testid="stSidebarNav"] a[href="{base}/{path}"]')
                start = time.perf_counter()
                link.click()
                _drawn(page, title)
                out[f"warm, sidebar: {title}"] = time.perf_counter() - start
            link = page.locator(f'[data-testid="stSidebarNav"] a[href="{base}/surfaces"]')
            link.click()
            _drawn(page, "Surfaces")
            start = time.perf_counter()
            page.locator('[data-testid="stRadio"] label', has_text="3D").click()
            toggle = page.locator('[data-testid="stCheckbox"]', has_text="interactive")
            toggle.wait_for(timeout=TIMEOUT_MS)  # the 3D view's controls: its run has begun
            _drawn(page, "Surfaces")
            out[f"warm, view switch: {VARIANTS_3D[0][0]}"] = time.perf_counter() - start
            start = time.perf_counter()
            toggle.click()
            _drawn(page, "Surfaces", scene=True)
            out[f"warm, toggle: {VARIANTS_3D[1][0]}"] = time.perf_counter() - start
            page.close()
        context.close()
    # The floor: Streamlit's own page (a title, nothing else) opened again in a new tab.
    context = _new_context(browser)
    with serve(home, "empty") as base:
        _open(context, f"{base}/", "Empty")
        out["floor, new tab: empty Streamlit page"] = _open(context, f"{base}/", "Empty")
    context.close()
    return out


def browser_times(home: Path, repeat: int) -> dict[str, list[float]]:
    """``repeat`` browser passes; every figure's values."""
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        try:
            for _ in range(repeat):
                for key, secs in browser_pass(browser, home).items():
                    times.setdefault(key, []).append(secs)
        finally:
            browser.close()
    return times


def spread(values: list[float]) -> str:
    """min / median / max of ``values`` in seconds."""
    return f"{min(values):5.2f} / {statistics.median(values):5.2f} / {max(values):5.2f} s"


def _target(key: str) -> float:
    if key.startswith("start"):
        return START_TARGET_S
    return VIEW_3D_TARGET_S if "3D view" in key else PAGE_TARGET_S


def report_browser(times: dict[str, list[float]], repeat: int) -> None:
    print(f"(b) Chromium, {repeat} pass(es), each on a fresh server and browser profile; "
          "min / median / max; the target applies to the warm figures, the start and 3D view")  # fmt: skip
    for key, values in times.items():
        target = _target(key)
        judged = not key.startswith(("cold", "floor")) and "baseline" not in key
        verdict = ("meets" if statistics.median(values) < target else "MISSES") if judged else "  -  "
        print(f"(b) {key:44s} {spread(values)}  target {target:.0f} s: {verdict}")
    print(f"(b) load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())} on "
          f"{os.cpu_count()} CPUs")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=101, help="points per side (default 101)")
    parser.add_argument("--repeat", type=int, default=3, help="passes (default 3)")
    parser.add_argument("--no-browser", action="store_true", help="(a) only: AppTest")
    parser.add_argument("--browser-only", "--start-only", action="store_true",
                        help="(b) only: start, every page and the 3D view in Chromium")  # fmt: skip
    args = parser.parse_args(argv)
    if args.grid < 2 or args.repeat < 1:
        parser.error("--grid must be at least 2 and --repeat at least 1")

    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        home = Path(tmp) / ".tracker"
        start = time.perf_counter()
        # Seeded in a child process, so that the first page run here imports what it needs.
        subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; "
             "from benchmarks.dashboard import seed_surfaces; "
             "print(seed_surfaces(Path(sys.argv[1]), int(sys.argv[2])))", str(home), str(args.grid)],
            check=True, cwd=REPO, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        print(f"seeded four {args.grid}x{args.grid} surfaces in {time.perf_counter() - start:.1f} s"
              f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")  # fmt: skip
        if not args.browser_only:
            first, views = apptest_times(home, args.repeat)
            grid = f"{args.grid}x{args.grid}"
            print(f"(a) AppTest, Surfaces page with four {grid} surfaces, first run in a fresh "
                  f"process (imports included): {first:.2f} s")  # fmt: skip
            for view, (cold, warm) in views.items():
                print(f"(a) AppTest, {view:8s}: caches empty {spread(cold)}, caches warm "
                      f"{spread(warm)}")  # fmt: skip
        if not args.no_browser:
            report_browser(browser_times(home, args.repeat), args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
