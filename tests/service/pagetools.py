"""Helpers of the page's browser tests: the tab, the API as the page asks it, and probes of the drawn page."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from servicetools import REPO, Server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SHOTS = REPO / "test-output" / "page"
KEY = "page-test-key"
MODEL = "resnet20-cifar10"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name in the page's markup and script, never fetched
ON_SPIKE_RGB = (0x1D, 0x4E, 0xD8)  # --on in page.css
WINDOW_RGB = (0xEE, 0xF2, 0xF7)  # --window in page.css


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


class Visit:
    """A browser tab ``width`` px wide that reaches only the server; records blocked requests and errors."""

    def __init__(self, browser: Browser, server: Server, width: int = 1280) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 800})
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

    def shot(self, name: str, selector: str | None = None) -> None:
        """A full-page screenshot (or of ``selector``'s element) under test-output/page/."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        target = self.page.locator(selector) if selector else self.page
        target.screenshot(path=str(SHOTS / name), **({} if selector else {"full_page": True}))

    def close(self) -> None:
        """Close the tab; nothing was fetched from another host and no script failed."""
        self.context.close()
        assert self.blocked == [], f"requests to other hosts: {self.blocked}"
        assert self.errors == [], f"script errors: {self.errors}"


def enter_key(page: Page) -> None:
    """Type the API key into the page's key field and commit it, as a person does."""
    page.fill("#key", KEY)
    page.locator("#key").blur()
    from playwright.sync_api import expect

    expect(page.locator("#model")).to_have_value(MODEL)


def references(html: str) -> list[str]:
    """Every src and href of a page's markup."""
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def external_urls(text: str) -> list[str]:
    """Absolute http(s) URLs in a text, less the SVG namespace."""
    return [url for url in re.findall(r"https?://[^\s\"'`)<>]+", text) if url != SVG_NAMESPACE]


@dataclass(frozen=True)
class Marks:
    """Pixels of one colour on the raster canvas: how many, the widest run in a row, their x extent."""

    pixels: int
    widest: int
    extent: int


def marks(page: Page, rgb: tuple[int, int, int]) -> Marks:
    """What the raster canvas shows in colour ``rgb`` (device pixels)."""
    found = page.evaluate(
        """([r, g, b]) => {
            const canvas = document.getElementById("raster");
            const { width, height } = canvas;
            const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
            let pixels = 0, widest = 0, left = width, right = -1;
            for (let y = 0; y < height; y++) {
                let run = 0;
                for (let x = 0; x < width; x++) {
                    const i = 4 * (y * width + x);
                    if (data[i] === r && data[i + 1] === g && data[i + 2] === b) {
                        pixels += 1;
                        run += 1;
                        widest = Math.max(widest, run);
                        left = Math.min(left, x);
                        right = Math.max(right, x);
                    } else run = 0;
                }
            }
            return { pixels, widest, extent: right - left + 1 };
        }""",
        list(rgb),
    )
    return Marks(**found)


def layout(page: Page) -> dict[str, Any]:
    """The page's width against the screen's, each figure tile's box and fit, and every bar's widths."""
    return page.evaluate(
        """() => {
            const box = (node) => {
                const r = node.getBoundingClientRect();
                return { left: r.left, top: r.top, right: r.right, bottom: r.bottom };
            };
            return {
                scrollWidth: document.documentElement.scrollWidth,
                innerWidth: window.innerWidth,
                beyond: [...document.querySelectorAll("body *")]
                    .filter((n) => box(n).right > window.innerWidth)
                    .map((n) => `${n.tagName.toLowerCase()}#${n.id}.${n.getAttribute("class")}`),
                tiles: [...document.querySelectorAll("#figures > div")].map((tile) => {
                    const value = tile.querySelector("dd");
                    const line = parseFloat(getComputedStyle(value).lineHeight);
                    return {
                        name: tile.querySelector("dt").textContent,
                        box: box(tile),
                        scrollWidth: tile.scrollWidth,
                        clientWidth: tile.clientWidth,
                        lines: value.getBoundingClientRect().height / line,
                    };
                }),
                bars: [...document.querySelectorAll(".bars .row")].map((row) => ({
                    list: row.parentElement.id,
                    track: row.querySelector(".track").getBoundingClientRect().width,
                    fill: row.querySelector(".fill").getBoundingClientRect().width,
                    share: parseFloat(row.querySelector(".fill").style.width) / 100,
                })),
            };
        }"""
    )


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether two boxes share any area."""
    return min(a["right"], b["right"]) > max(a["left"], b["left"]) and min(a["bottom"], b["bottom"]) > max(
        a["top"], b["top"]
    )
