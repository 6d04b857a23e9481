"""The page at / in a real browser (Debian's Chromium, driven by Playwright) against a real uvicorn server.

The server serves the shipped ResNet-20 with TSC_API_KEY set; the browser may reach nothing but the
server (every other host is blocked and recorded). Screenshots go to test-output/page/ (git-ignored).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from PIL import Image
from servicetools import REPO, Server, encode, start

from benchmarks.harness import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-binary-lossless.tar.gz"
SHOTS = REPO / "test-output" / "page"
KEY = "page-test-key"
MODEL = "resnet20-cifar10"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name in the page's markup and script, never fetched
ON_SPIKE_RGB = (0x1D, 0x4E, 0xD8)  # --on in page.css
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service serving the shipped ResNet-20, with an API key and a short rate-coded comparison."""
    port = free_port()
    argv = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    env = {"TSC_MODEL_DIR": str(REPO / "models"), "TSC_API_KEY": KEY, "TSC_RATE_STEPS": "32"}
    server = start(argv, env, tmp_path_factory.mktemp("log") / "server.log", port)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cifar() -> Any:
    """The original CIFAR-10 test set (uint8 images [N, 3, 32, 32], labels, class names)."""
    if not ARCHIVE.is_file():
        pytest.skip(f"the CIFAR-10 archive {ARCHIVE} is absent (the shared datasets folder)")
    from converter.training.datasets import open_dataset

    return open_dataset(f"cifar10:{ARCHIVE}", "test")


def classify(server: Server, png: bytes, **params: str) -> dict[str, Any]:
    """The API's own answer for an upload, as the page asks for it."""
    response = httpx.post(
        f"{server.url}/classify",
        params={"raster": "true", "top_k": "5", **params},
        files={"file": ("image.png", png, "image/png")},
        headers={"X-API-Key": KEY},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.json()


@dataclass(frozen=True)
class Photo:
    """A CIFAR-10 test image as a PNG upload, and its true class."""

    name: str
    label: str
    png: bytes


@pytest.fixture(scope="module")
def photo(cifar: Any, server: Server) -> Photo:
    """The first CIFAR-10 test image that the model classifies right."""
    for i in range(20):
        png = encode(Image.fromarray(cifar.images[i].permute(1, 2, 0).numpy(), "RGB"))
        label = cifar.classes[int(cifar.labels[i])]
        if classify(server, png)["predictions"][0]["label"] == label:
            return Photo(f"cifar10-test-{i}.png", label, png)
    raise AssertionError("the model got none of the first 20 CIFAR-10 test images right")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium under Playwright; skips naming what is missing."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright for Python is missing (pip install -r requirements-dev.txt)"
    )
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium is missing: {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


class Visit:
    """A browser tab at 1280x800 that reaches only the server; records blocked requests and script errors."""

    def __init__(self, browser: Browser, server: Server) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.blocked: list[str] = []
        self.errors: list[str] = []
        local = urlsplit(server.url).netloc
        self.context.route("**/*", self._only(local))
        self.page: Page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _only(self, netloc: str) -> Any:
        def route(route: Any) -> None:
            url = route.request.url
            if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).netloc == netloc:
                route.continue_()
            else:
                self.blocked.append(url)
                route.abort()

        return route

    def shot(self, name: str) -> Path:
        """A full-page screenshot under test-output/page/."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        """Close the tab; nothing was fetched from another host and no script failed."""
        self.context.close()
        assert self.blocked == [], f"requests to other hosts: {self.blocked}"
        assert self.errors == [], f"script errors: {self.errors}"


@pytest.fixture
def visit(browser: Browser, server: Server) -> Iterator[Visit]:
    """A fresh tab (fresh sessionStorage) for one test."""
    tab = Visit(browser, server)
    yield tab
    tab.close()


def enter_key(page: Page) -> None:
    """Type the API key into the page's key field and commit it, as a person does."""
    page.fill("#key", KEY)
    page.locator("#key").blur()
    from playwright.sync_api import expect

    expect(page.locator("#model")).to_have_value(MODEL)


def on_spike_pixels(page: Page) -> int:
    """Pixels of the raster canvas in the on-spike colour."""
    return page.evaluate(
        """([r, g, b]) => {
            const canvas = document.getElementById("raster");
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 0; i < data.length; i += 4) {
                n += data[i] === r && data[i + 1] === g && data[i + 2] === b;
            }
            return n;
        }""",
        list(ON_SPIKE_RGB),
    )


def test_page_classifies_a_cifar10_image_with_an_api_key(visit: Visit, server: Server, photo: Photo) -> None:
    from playwright.sync_api import expect

    page = visit.page
    page.goto(server.url)
    expect(page.locator("#error")).to_contain_text("an API key is required")  # the API's 401 message
    visit.shot("needs-key.png")
    enter_key(page)
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#model-info")).to_contain_text("Windows:")
    page.check("#compare")
    page.set_input_files("#file", files=[{"name": photo.name, "mimeType": "image/png", "buffer": photo.png}])
    expect(page.locator("#status")).to_contain_text("Answered in", timeout=120_000)

    expect(page.locator("#top-label")).to_have_text(photo.label)
    answer = classify(server, photo.png, compare="true")
    expect(page.locator("#model-ref")).to_contain_text(f"{MODEL}, version {answer['model']['version']}")
    expect(page.locator("#predictions [role=listitem]")).to_have_count(5)
    ops = answer["operations"]
    for figure, value in (
        ("timesteps", answer["latency"]["timesteps"]),
        ("spikes", answer["spikes"]["total"]),
        ("additions", ops["synaptic_additions"]),
        ("memory", ops["memory_accesses"]),
        ("ann-macs", ops["ann_macs"]),
        ("rate-timesteps", answer["comparison"]["rate"]["timesteps"]),
    ):
        expect(page.locator(f"[data-figure={figure}] dd")).to_have_text(f"{value:,}")
    expect(page.locator("#ratios")).to_contain_text(re.compile(r"ANN energy / TSC energy = [0-9.,]+x"))
    expect(page.locator("#ratios")).to_contain_text(re.compile(r"Rate energy / TSC energy = [0-9.,]+x"))
    expect(page.locator("#cost-chart rect")).to_have_count(11)  # 5 TSC, 4 rate-coded and 2 ANN bars
    expect(page.locator("#layer-chart rect")).to_have_count(len(answer["spikes"]["layers"]))

    on_spikes = sum(on is not None for layer in answer["raster"] for on in layer["on"])
    assert on_spikes > 0
    expect(page.locator("#raster")).to_have_attribute("data-on-spikes", str(on_spikes))
    assert on_spike_pixels(page) > 0
    expect(page.locator("#raster-summary")).to_contain_text(f"{on_spikes} spiked on")
    assert page.evaluate("sessionStorage.getItem('tsc-api-key')") == KEY
    visit.shot("classified.png")


def test_page_shows_the_api_error_for_a_non_image(visit: Visit, server: Server) -> None:
    from playwright.sync_api import expect

    page = visit.page
    page.goto(server.url)
    enter_key(page)
    text = b"not an image, just some words"
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": text}])
    response = httpx.post(
        f"{server.url}/classify",
        files={"file": ("notes.txt", text, "text/plain")},
        headers={"X-API-Key": KEY},
    )
    body = response.json()
    assert response.status_code in (400, 415)
    expect(page.locator("#error")).to_have_text(
        f"{body['detail']} ({body['error']}, HTTP {response.status_code})."
    )
    expect(page.locator("#results")).to_be_hidden()
    visit.shot("not-an-image.png")


def test_page_takes_dropped_and_pasted_images(visit: Visit, server: Server, photo: Photo) -> None:
    from playwright.sync_api import expect

    page = visit.page
    page.goto(server.url)
    enter_key(page)
    for event, target in (("drop", "#drop"), ("paste", "body")):
        page.evaluate("document.getElementById('top-label').textContent = ''")
        page.locator(target).evaluate(
            """(node, [event, name, bytes]) => {
                const data = new DataTransfer();
                data.items.add(new File([new Uint8Array(bytes)], name, { type: "image/png" }));
                const init = { bubbles: true, cancelable: true };
                node.dispatchEvent(event === "drop"
                    ? new DragEvent("drop", { ...init, dataTransfer: data })
                    : new ClipboardEvent("paste", { ...init, clipboardData: data }));
            }""",
            [event, photo.name, list(photo.png)],
        )
        expect(page.locator("#top-label")).to_have_text(photo.label, timeout=60_000)


def test_docs_render_with_every_other_host_blocked(visit: Visit, server: Server) -> None:
    from playwright.sync_api import expect

    page = visit.page
    page.goto(f"{server.url}/docs")
    expect(page.locator(".opblock-summary-path", has_text="/classify").first).to_be_visible(timeout=30_000)
    visit.shot("docs.png")
    page.goto(f"{server.url}/redoc")
    expect(page.get_by_text("/classify", exact=True).first).to_be_attached(timeout=30_000)
    visit.shot("redoc.png")
    assert visit.blocked == [REDOC_LOGO]  # ReDoc's attribution image, which hides itself when it fails
    visit.blocked.clear()


def references(html: str) -> list[str]:
    """Every src and href of a page's markup."""
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def external_urls(text: str) -> list[str]:
    """Absolute http(s) URLs in a text, less the SVG namespace."""
    return [url for url in re.findall(r"https?://[^\s\"'`)<>]+", text) if url != SVG_NAMESPACE]


def test_page_and_docs_reference_only_assets_the_server_serves(server: Server) -> None:
    page = httpx.get(f"{server.url}/")  # no API key: the page is open, its API calls carry the key
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<canvas id="raster"' in page.text
    served = {}
    for base, html in (("/", page.text), ("/docs", httpx.get(f"{server.url}/docs").text)):
        assert external_urls(html) == []
        for ref in references(html):
            served[urljoin(base, ref)] = httpx.get(f"{server.url}{urljoin(base, ref)}")
    redoc = httpx.get(f"{server.url}/redoc").text
    assert external_urls(redoc) == [] and "fonts.googleapis" not in redoc
    for ref in references(redoc):
        served[urljoin("/redoc", ref)] = httpx.get(f"{server.url}{urljoin('/redoc', ref)}")
    assert {"/assets/page.js", "/assets/page.css", "/assets/favicon.svg", "/docs", "/redoc"} <= set(served)
    assert {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/redoc.standalone.js"} <= set(served)
    assert {url: r.status_code for url, r in served.items()} == dict.fromkeys(served, 200)
    for asset in ("/assets/page.js", "/assets/page.css", "/assets/favicon.svg"):
        assert external_urls(served[asset].text) == [], asset
