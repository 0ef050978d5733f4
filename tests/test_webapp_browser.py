"""The web demo in a real browser (Debian's chromium through selenium), as a person uses it.

Opens the page served by the bundled demo model, drags a slider with real pointer events and sees
the image change, renders a preset to a video, types a bad seed and sees the error, checks that
nothing came from anywhere but the server (fonts and icons included), uploads a talking video
and gets its reenactment, and checks that the page fits a phone's width. Skipped, with the reason, where there is no chromium, chromedriver or selenium.

``python tests/test_webapp_browser.py OUT.png`` takes the README's screenshot the same way.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from aniportraitgan.inference import load_inference_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# Flags for a closed network: no background traffic, no first-run or sync calls, no GPU.
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")
TIMEOUT = 30.0


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ModuleNotFoundError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "no chromium/chromedriver on PATH (apt-get install chromium chromium-driver; make setup does it as root)"
    return None


def start_browser(profile: Path, width: int = 1280, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def serve_demo(examples=None):
    """(app, url, renderer) of the demo model on a free loopback port."""
    from aniportraitgan.webapp import WebRenderer, build_app, launch
    from aniportraitgan.webapp.app import EXAMPLE_SEEDS

    renderer = WebRenderer(load_inference_model("demo", "cpu"))
    app = build_app(renderer, examples=EXAMPLE_SEEDS if examples is None else examples)
    return app, launch(app, "127.0.0.1", 0, block=False), renderer


def wait_for(driver, condition, what: str, timeout: float = TIMEOUT):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None


def image_src(driver) -> str:
    return driver.execute_script("const i = document.querySelector('#portrait img'); return i ? i.src : '';")


def page_ready(driver) -> str:
    return wait_for(driver, lambda d: "aniportraitgan_seed" in image_src(d) and image_src(d), "the first image")


@pytest.fixture(scope="module")
def served():
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    app, url, renderer = serve_demo()
    yield url, renderer
    app.close()
    renderer.close()


@pytest.fixture()
def driver(tmp_path):
    d = start_browser(tmp_path / "profile")
    yield d
    d.quit()


def test_page_in_a_browser(served, driver):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, _ = served
    t0 = time.perf_counter()
    driver.get(url)
    first = page_ready(driver)
    assert "seed0_portrait_64px" in first
    assert driver.find_element(By.CSS_SELECTOR, "#portrait a[download]").get_attribute("download").endswith(".png")

    # Drag the camera yaw slider with the mouse: press on the thumb, move right, let go.
    slider = driver.find_element(By.CSS_SELECTOR, "#yaw input[type=range]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", slider)
    ActionChains(driver).click_and_hold(slider).pause(0.1).move_by_offset(15, 0).pause(0.2) \
        .move_by_offset(15, 0).pause(0.2).release().perform()
    assert float(slider.get_attribute("value")) > 0
    dragged = wait_for(driver, lambda d: image_src(d) != first and "_seed0_" in image_src(d) and image_src(d),
                       "the image to follow the slider")
    # Keys are real input events too.
    slider.send_keys(Keys.ARROW_RIGHT)
    wait_for(driver, lambda d: image_src(d) not in (first, dragged), "the image to follow a key press")

    # A bad seed gets a readable message, and the page keeps working after it.
    seed = driver.find_element(By.CSS_SELECTOR, "#seed input")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", seed)
    seed.send_keys(Keys.CONTROL, "a")
    seed.send_keys("-5", Keys.TAB)
    message = "seed must be in [0, 2147483647], got -5"
    wait_for(driver, lambda d: d.find_elements(By.XPATH, f"//*[contains(text(), '{message}')]"),
             "the error message for seed -5")
    seed.send_keys(Keys.CONTROL, "a")
    seed.send_keys("12", Keys.TAB)
    wait_for(driver, lambda d: "aniportraitgan_seed12_" in image_src(d), "the image of seed 12")

    # A preset to video: the Animation tab, the button, a playable mp4 with a download name.
    driver.find_element(By.ID, "animation-tab-button").click()
    button = wait_for(driver, lambda d: d.find_element(By.ID, "render-video"), "the video button")
    button.click()
    src = wait_for(driver, lambda d: d.execute_script(
        "const v = document.querySelector('#video video'); return v && v.src.includes('.mp4') ? v.src : '';"),
        "the rendered video", timeout=45)
    assert "aniportraitgan_seed12_smile_portrait_64px.mp4" in src
    wait_for(driver, lambda d: d.execute_script("return document.querySelector('#video video').readyState >= 1"),
             "the video to load in the player")
    assert "frames at 25 fps" in driver.find_element(By.ID, "video-status").text

    # Offline: every resource the page loaded came from this server (or is inline data).
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    base = url.rstrip("/")
    outside = [r for r in resources if not r.startswith((base, "data:", "blob:"))]
    assert resources and not outside, outside
    fonts = driver.execute_script(
        "await document.fonts.ready; return Array.from(document.fonts).map(f => [f.family, f.status]);")
    assert any(status == "loaded" for _, status in fonts) and not [f for f in fonts if f[1] == "error"], fonts
    assert driver.find_elements(By.CSS_SELECTOR, "#portrait svg"), "icons are inline SVG"
    assert time.perf_counter() - t0 < 60


def test_video_driving_in_a_browser(served, driver, tmp_path):
    from selenium.webdriver.common.by import By

    pytest.importorskip("mediapipe", reason="video driving needs the [track] extra (mediapipe)")
    from test_webapp_driving import talking_clip

    clip = talking_clip(tmp_path)
    url, _ = served
    driver.get(url)
    page_ready(driver)
    driver.find_element(By.ID, "driving-tab-button").click()
    upload = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#drive-input input[type=file]"),
                      "the upload field")
    upload.send_keys(str(clip))
    wait_for(driver, lambda d: d.execute_script(
        "const v = document.querySelector('#drive-input video'); return v && v.src.includes('talking');"),
        "the uploaded video in its player")
    driver.find_element(By.ID, "reenact").click()
    src = wait_for(driver, lambda d: d.execute_script(
        "const v = document.querySelector('#drive-video video'); return v && v.src.includes('.mp4') ? v.src : '';"),
        "the reenactment", timeout=60)
    assert "aniportraitgan_seed0_drive_talking_portrait_64px.mp4" in src
    assert "11 frames at 25 fps" in driver.find_element(By.ID, "drive-status").text


def test_page_fits_a_phone(served, driver):
    url, _ = served
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    driver.get(url)
    page_ready(driver)
    width = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[1] == 390 and width[0] <= 390, width
    meta = driver.execute_script("const m = document.querySelector('meta[name=viewport]'); return m && m.content")
    assert meta and "width=device-width" in meta
    for el in ("portrait", "seed", "yaw", "exp-smile"):
        box = driver.execute_script(
            f"const r = document.getElementById('{el}').getBoundingClientRect(); return [r.left, r.right]")
        assert 0 <= box[0] and box[1] <= 390, (el, box)


def screenshot(out: Path) -> None:
    """The README's picture: the demo page at desktop width, both cameras, a changed pose and
    expression."""
    from selenium.webdriver.common.by import By

    reason = browser_missing()
    if reason:
        raise SystemExit(reason)
    app, url, renderer = serve_demo()
    try:
        with tempfile.TemporaryDirectory() as profile:
            d = start_browser(Path(profile), 1280, 1100)
            try:
                d.get(url)
                page_ready(d)
                for el, value in (("seed", 7), ("yaw", 15), ("head-turn", 10), ("exp-smile", 0.8)):
                    box = d.find_element(By.CSS_SELECTOR, f"#{el} input[type=number]")
                    box.clear()
                    box.send_keys(str(value), "\n")
                    time.sleep(1.0)
                d.find_element(By.XPATH, "//*[@id='view']//label[contains(., 'both')]").click()
                wait_for(d, lambda d: "seed7_both_" in image_src(d), "seed 7, both cameras")
                d.find_element(By.TAG_NAME, "h2").click()  # no focused field in the picture
                time.sleep(2.0)
                d.execute_script("window.scrollTo(0, 0)")
                height = d.execute_script("return document.body.scrollHeight")
                d.set_window_size(1280, min(height + 40, 1600))
                time.sleep(1.0)
                d.save_screenshot(str(out))
            finally:
                d.quit()
    finally:
        app.close()
        renderer.close()


if __name__ == "__main__":
    screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "web_demo.png"))
