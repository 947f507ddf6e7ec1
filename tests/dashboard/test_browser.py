"""The dashboard as a user sees it: `tracker dashboard` in a subprocess, every page opened in
headless Chromium, no error box, charts drawn, a screenshot of each page saved."""

from __future__ import annotations

from pathlib import Path

import pytest

# url path -> what must be drawn there: Plotly charts (.js-plotly-plot) and server-drawn
# images in the main block (the Surfaces page's heatmaps, difference, curves and panel)
PAGES = {
    "overview": {"title": "Overview", "charts": 0, "text": "Recent failures"},
    "models": {"title": "Models", "charts": 1, "text": "Training curves"},
    "surfaces": {"title": "Surfaces", "charts": 0, "images": 4, "text": "2D surfaces side by side"},
    "topology": {"title": "Topology", "charts": 0, "text": "No results yet"},
    # Figure 2, Figure 7 (3D scatter), the runs' scatter and one run's trace.
    "levelsets": {"title": "Level sets", "charts": 4, "text": "Figure 2"},
    "morse": {"title": "Morse graphs", "charts": 0, "text": "No results yet"},
    "curvature": {"title": "Curvature", "charts": 0, "text": "No results yet"},
    "meta": {"title": "Meta-analysis", "charts": 2, "text": "SQL (read-only)"},
}


# At least n plotly charts, each with its svg drawn.
DRAWN = """n => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  return plots.length >= n && plots.every(p => p.querySelector('.main-svg'));
}"""
# At least n images in the main block, each loaded and decoded.
IMAGES = """n => {
  const imgs = [...document.querySelectorAll('[data-testid="stMain"] img')];
  return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""


@pytest.mark.slow
def test_every_page_renders_in_a_real_browser(served: str, chromium: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for path, expect in PAGES.items():
                url = f"{served}/" if path == "overview" else f"{served}/{path}"
                page.goto(url, wait_until="domcontentloaded")
                page.locator("h1", has_text=expect["title"]).wait_for(timeout=60_000)
                page.get_by_text(expect["text"], exact=False).first.wait_for(timeout=60_000)
                if expect["charts"]:
                    # Plotly draws into svg (and canvas for 3D/webgl) inside .js-plotly-plot.
                    page.wait_for_function(DRAWN, arg=expect["charts"], timeout=60_000)
                if expect.get("images"):
                    page.wait_for_function(IMAGES, arg=expect["images"], timeout=60_000)
                # Let the script run finish: Streamlit shows its status widget while running.
                page.wait_for_selector(
                    '[data-testid="stStatusWidget"]', state="detached", timeout=60_000
                )
                shot = tmp_path / f"{path}.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000, path
                assert page.get_by_text("Page not found").count() == 0, path
                errors = page.locator('[data-testid="stException"]')
                assert errors.count() == 0, f"{path}: {errors.first.inner_text()}"
                drawn = page.locator(".js-plotly-plot").count()
                assert drawn >= expect["charts"], (path, drawn)
        finally:
            browser.close()
