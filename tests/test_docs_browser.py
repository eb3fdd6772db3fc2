"""The documentation as a reader sees it: every page of the built site opened in headless Chromium.

Per page: the equations are typeset by the KaTeX shipped in docs/assets/katex/ (no raw ``\\(`` or ``\\[``
left in the text), every image loads, the console shows no error, and nothing is fetched from anywhere
but the site itself (other hosts are made unresolvable, so a CDN link fails the test as it would fail a
reader offline). Selenium drives Debian's ``chromium`` through its matching ``chromium-driver``; nothing
is downloaded (Playwright would fetch a browser build of its own). Skipped, saying why, where either
program is missing (`.ci/run` installs both with apt-get).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _url(page: Path) -> str:
    """Where mkdocs puts ``docs/<page>`` (directory URLs): ``adapters/concat.md`` -> ``adapters/concat/``."""
    path = page.parent if page.name == "index.md" else page.with_suffix("")
    return "" if path == Path(".") else path.as_posix() + "/"


#: every page of the site, as its path under the site's root
PAGES = sorted(_url(page.relative_to(DOCS)) for page in DOCS.rglob("*.md"))
#: pages whose equations must be typeset (more than this many KaTeX formulae each)
MATH_PAGES = {"adapters/cross_attention/": 10, "adapters/perceiver_resampler/": 10}
#: the quickstart's config and its report's figures, shown in the tutorials (docs/tutorial_figures.py makes them)
QUICKSTART = REPO / "experiments" / "quickstart" / "config.yaml"
TUTORIAL_FIGURES = ("r2_spearman_per_tissue.png", "scatter_best_worst.png", "loss_curves.png")

_CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
_DRIVER = shutil.which("chromedriver")

# about 11 s (build 1.5 s, browser start 1 s, 0.4 s a page) on two busy CPU cores: in the fast suite
pytestmark = pytest.mark.skipif(
    _CHROMIUM is None or _DRIVER is None,
    reason="no headless Chromium: install Debian's chromium and chromium-driver (.ci/run does, with apt-get)",
)

#: what the page shows once its scripts have run; collected in the browser in one round trip
_INSPECT = """
const math = [...document.querySelectorAll('.arithmatex')];
return {
  text: document.body.innerText,
  katex: document.querySelectorAll('.katex').length,
  untypeset: math.filter(e => !e.querySelector('.katex')).map(e => e.textContent.slice(0, 80)),
  images: [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
  resources: performance.getEntriesByType('resource').map(r => r.name),
  code: [...document.querySelectorAll('pre code')].map(c => c.textContent),
};
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built with ``mkdocs build --strict``, served on a free local port; yields its root URL."""
    root = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(root)],
                            capture_output=True, text=True, cwd=REPO, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        # offline: every host name fails to resolve; the site is served on an IP address
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=_DRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _open(browser, url: str) -> tuple[dict, list[str]]:
    """What ``url`` shows once loaded, and the console's errors while it loaded."""
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(url)
    shown = browser.execute_script(_INSPECT)
    errors = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    return shown, errors


def test_pages_are_found():
    assert "adapters/cross_attention/" in PAGES and "tutorials/" in PAGES and "" in PAGES


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page or "index")
def test_page_renders_in_a_browser(site, browser, page):
    shown, errors = _open(browser, site + page)
    assert errors == [], f"console errors on /{page}"
    assert "\\(" not in shown["text"] and "\\[" not in shown["text"], f"raw LaTeX on /{page}: KaTeX did not run"
    assert shown["untypeset"] == [], "formulae left as source"
    broken = [image["src"] for image in shown["images"] if not image["ok"]]
    assert broken == [], "images that did not load"
    elsewhere = [url for url in shown["resources"] if not url.startswith(site)]
    assert elsewhere == [], "fetched from outside the site (a CDN?): it fails offline"
    if page in MATH_PAGES:
        assert shown["katex"] > MATH_PAGES[page], f"/{page} has {shown['katex']} typeset formulae"


def test_tutorials_show_the_quickstart_config_and_its_report(site, browser):
    shown, _ = _open(browser, site + "tutorials/")
    assert QUICKSTART.read_text().strip() in [block.strip() for block in shown["code"]], "the config is not shown"
    loaded = {image["src"].rsplit("/", 1)[-1] for image in shown["images"] if image["ok"]}
    missing = {f"quickstart_{name}" for name in TUTORIAL_FIGURES} - loaded
    assert not missing, f"report figures missing from the tutorials (loaded: {sorted(loaded)})"
