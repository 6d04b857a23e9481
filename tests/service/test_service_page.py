"""The page at / in a real browser (Debian's Chromium, driven by Playwright) against a real uvicorn server.

The server serves the shipped ResNet-20 with TSC_API_KEY set; the browser may reach nothing but the
server (every other host is blocked and recorded). Screenshots go to test-output/page/ (git-ignored).
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import httpx
import pytest
from pagetools import (
    KEY,
    MODEL,
    ON_SPIKE_RGB,
    WINDOW_RGB,
    Photo,
    Visit,
    classify,
    enter_key,
    external_urls,
    layout,
    marks,
    overlap,
    references,
)
from PIL import Image
from servicetools import REPO, Server, encode, start

from benchmarks.harness import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

CHROMIUM = Path("/usr/bin/chromium")
ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-binary-lossless.tar.gz"
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
WIDTHS = (390, 1280, 1920)
LAYER = "tsc_clip_layer1_0_relu1"
LONG = 1_027_973_515  # a ten-digit count, as a rate-coded SNN's additions reach with 256 steps


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


@pytest.fixture
def visit(browser: Browser, server: Server, request: pytest.FixtureRequest) -> Iterator[Visit]:
    """A fresh tab (fresh sessionStorage) for one test, 1280 px wide unless parametrized with a width."""
    tab = Visit(browser, server, getattr(request, "param", 1280))
    yield tab
    tab.close()


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
    expect(page.locator("#layer-chart .fill")).to_have_count(len(answer["spikes"]["layers"]))

    on_spikes = sum(on is not None for layer in answer["raster"] for on in layer["on"])
    assert on_spikes > 0
    expect(page.locator("#raster")).to_have_attribute("data-on-spikes", str(on_spikes))
    assert marks(page, ON_SPIKE_RGB).pixels > 0
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
    assets = [
        "/assets/page.js",
        "/assets/names.js",
        "/assets/raster.js",
        "/assets/page.css",
        "/assets/favicon.svg",
    ]
    assert {*assets, "/docs", "/redoc"} <= set(served)
    assert {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/redoc.standalone.js"} <= set(served)
    assert {url: r.status_code for url, r in served.items()} == dict.fromkeys(served, 200)
    for asset in assets:
        assert external_urls(served[asset].text) == [], asset


def long_counts(route: Route) -> None:
    """The server's answer to the page's /classify with its counts at ten digits, the widest figures."""
    response = route.fetch()
    answer = response.json()
    ops, rate = answer["operations"], answer["comparison"]["rate"]
    for counts, key in (
        (ops, "synaptic_additions"),
        (ops, "memory_accesses"),
        (ops, "neuron_updates"),
        (ops, "ann_macs"),
        (rate, "spikes"),
        (rate, "synaptic_additions"),
    ):
        counts[key] = LONG
    route.fulfill(response=response, json=answer)


def classified(visit: Visit, server: Server, photo: Photo) -> Page:
    """The tab with the key entered and the photo classified with compare, counts at ten digits."""
    from playwright.sync_api import expect

    page = visit.page
    page.route("**/classify?*", long_counts)
    page.goto(server.url)
    enter_key(page)
    page.check("#compare")
    page.set_input_files("#file", files=[{"name": photo.name, "mimeType": "image/png", "buffer": photo.png}])
    expect(page.locator("#status")).to_contain_text("Answered in", timeout=120_000)
    return page


@pytest.mark.parametrize("visit", WIDTHS, indirect=True)
def test_page_fits_the_screen(visit: Visit, server: Server, photo: Photo) -> None:
    from playwright.sync_api import expect

    page = classified(visit, server, photo)
    expect(page.locator("[data-figure=rate-additions] dd")).to_have_text(f"{LONG:,}")
    width = page.viewport_size["width"]
    found = layout(page)
    assert found["innerWidth"] == width
    assert found["scrollWidth"] <= width, f"wider than the screen: {found['beyond']}"
    tiles = found["tiles"]
    assert len(tiles) == 13
    for tile in tiles:
        assert tile["scrollWidth"] <= tile["clientWidth"] and tile["lines"] < 1.5, tile  # the figure fits
        assert tile["box"]["left"] >= 0 and tile["box"]["right"] <= width, tile
    for a, b in itertools.combinations(tiles, 2):
        assert not overlap(a["box"], b["box"]), (a, b)
    layers = 21  # input, 19 neuron layers, output
    assert [bar["list"] for bar in found["bars"]] == ["predictions"] * 5 + ["layer-chart"] * layers
    for bar in found["bars"]:
        assert bar["track"] >= 40 and bar["fill"] == pytest.approx(bar["share"] * bar["track"], abs=1), bar
    assert found["bars"][0]["fill"] > 0.9 * found["bars"][0]["track"]  # the top class, at 99 %

    for names, title in (("#layer-chart .name", f"{LAYER} (neuron)"), (".raster-name", LAYER)):
        expect(page.locator(names).nth(2)).to_contain_text("layer1.0 relu1")
        expect(page.locator(names).nth(2)).to_have_attribute("title", title)
    expect(page.locator("#raster-layer option").nth(3)).to_have_text("layer1.0 relu1")
    visit.shot(f"fits-{width}.png")


def time_range(page: Page) -> tuple[int, int]:
    """The first and last step the raster shows, from its time picker."""
    first, last = map(int, page.locator("#raster-time").input_value().split("-"))
    return first, last


@pytest.mark.parametrize("visit", WIDTHS, indirect=True)
def test_raster_zooms_to_a_layer_and_a_time_range(visit: Visit, server: Server, photo: Photo) -> None:
    from playwright.sync_api import expect

    page = classified(visit, server, photo)
    width = page.viewport_size["width"]
    canvas = page.locator("#raster")
    plot = canvas.evaluate("c => c.width")
    whole = marks(page, ON_SPIKE_RGB)
    assert whole.pixels > 0 and whole.widest <= 4  # 321 steps share the width

    page.select_option("#raster-layer", LAYER)
    expect(page.locator(".raster-name")).to_have_count(1)
    one = marks(page, ON_SPIKE_RGB)
    assert 0 < one.extent < 0.1 * plot  # its 16-step window in a run of 320 steps
    page.select_option("#raster-time", "32-48")
    window = marks(page, ON_SPIKE_RGB)
    assert window.widest >= max(6, 2 * one.widest) and window.extent > 8 * one.extent  # 17 steps, not 321
    assert marks(page, WINDOW_RGB).extent > 0.8 * plot  # the window still shaded, across the plot
    visit.shot(f"raster-layer-{width}.png", "section:has(#raster)")

    page.select_option("#raster-layer", "all")
    page.select_option("#raster-time", "0-320")
    canvas.evaluate("c => c.scrollIntoView()")
    box = canvas.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 4, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 20, steps=5)
    page.mouse.up()
    first, last = time_range(page)
    assert abs(first - 80) <= 3 and abs(last - 160) <= 3  # a quarter of 321 steps to a half
    page.click("#raster-in")
    page.click("#raster-in")
    start, end = time_range(page)
    assert 19 <= end - start <= 22 and abs((start + end) - (first + last)) <= 2  # a quarter, same centre
    page.click("#raster-later")
    assert time_range(page) == (start + (end - start + 1) // 2, end + (end - start + 1) // 2)  # half later
    assert marks(page, ON_SPIKE_RGB).widest >= 6

    page.select_option("#raster-time", "aligned")
    expect(page.locator("#raster-in")).to_be_disabled()
    aligned = marks(page, ON_SPIKE_RGB)
    assert aligned.widest >= 6 and aligned.pixels >= 3 * whole.pixels  # the same dots, wider
    visit.shot(f"raster-aligned-{width}.png", "section:has(#raster)")
