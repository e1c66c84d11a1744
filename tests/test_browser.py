"""
The live viewer page in a real headless browser (Debian's chromium and
chromium-driver, driven by selenium), against real C{twistd imageproto
--web} and C{twistd imageproto-sender} processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from imageproto.tap import freePort, twistdCommand

CHROMEDRIVER = "/usr/bin/chromedriver"

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover
    webdriver = None


def _browser(profile: str):
    """
    Headless Chromium with nothing that reaches the network, and the
    system chromedriver so that Selenium Manager never downloads one.
    """
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    if os.path.exists("/usr/bin/chromium"):
        options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class ViewerPageTests(SynchronousTestCase):
    def setUp(self) -> None:
        if webdriver is None:
            raise self.skipTest("selenium is not installed")
        if not os.path.exists(CHROMEDRIVER):
            raise self.skipTest(
                "needs Debian's chromium and chromium-driver "
                "(apt-get install -y chromium chromium-driver)"
            )
        self.work = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.work, True)

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = os.path.join(self.work, name + ".log")
        process = subprocess.Popen(
            twistdCommand() + [f"--logfile={log}"] + args,
            cwd=self.work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def stop():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

        self.addCleanup(stop)
        return process

    def test_pageShowsLiveStream(self) -> None:
        """
        The page served by C{--web} lists the sender's stream, shows its
        picture changing over time, its statistics updating and its frames'
        metadata (as text), without reloading.
        """
        port, webPort = freePort(), freePort()
        receiver = self.spawn(
            "receiver",
            [
                "imageproto",
                "--port", f"tcp:{port}:interface=127.0.0.1",
                "--web", f"tcp:{webPort}:interface=127.0.0.1",
            ],
        )
        sender = self.spawn(
            "sender",
            [
                "imageproto-sender",
                "--connect", f"tcp:127.0.0.1:{port}",
                "--name", "browsercam",
                "--fps", "10",
                "--width", "320",
                "--height", "240",
                "--metadata", '{"site": "<b>porch</b>", "floor": 2}',
            ],
        )
        base = f"http://127.0.0.1:{webPort}"
        driver = _browser(os.path.join(self.work, "profile"))
        self.addCleanup(driver.quit)
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        wait.until(lambda d: receiver.poll() is not None or _reachable(base + "/api/streams"))
        self.assertIsNone(receiver.poll(), "the receiver exited")

        driver.get(base + "/")
        card = wait.until(
            lambda d: d.find_element(By.CSS_SELECTOR, 'section[data-stream="browsercam"]')
        )
        self.assertIn("browsercam", card.find_element(By.CSS_SELECTOR, "h2").text)
        image = card.find_element(By.CSS_SELECTOR, ".picture img")
        wait.until(
            lambda d: d.execute_script("return arguments[0].naturalWidth", image) == 320
        )
        self.assertEqual(driver.execute_script("return arguments[0].naturalHeight", image), 240)
        self.assertEqual(card.find_element(By.CSS_SELECTOR, ".badge").text, "live")

        # The picture changes by itself: the moving test pattern arrives as
        # new MJPEG parts, with no reload of the page or the image.
        first = image.screenshot_as_png
        wait.until(lambda d: image.screenshot_as_png != first)

        # The statistics update by themselves.
        frames = card.find_element(By.CSS_SELECTOR, ".stat-frames")
        wait.until(lambda d: frames.text.isdigit())
        before = int(frames.text)
        wait.until(lambda d: int(frames.text) > before)
        wait.until(lambda d: float(card.find_element(By.CSS_SELECTOR, ".stat-fps").text) > 0)
        self.assertEqual(card.find_element(By.CSS_SELECTOR, ".stat-viewers").text, "1")
        # The newest frame's metadata, as text (markup in it stays text).
        metadata = card.find_element(By.CSS_SELECTOR, "pre.metadata")
        wait.until(lambda d: metadata.is_displayed() and "floor" in metadata.text)
        self.assertIn('"site": "<b>porch</b>"', metadata.text)
        self.assertEqual(card.find_elements(By.CSS_SELECTOR, "pre.metadata b"), [])
        # The page never navigated away: the same card element is still live.
        self.assertEqual(driver.execute_script("return performance.getEntriesByType('navigation').length"), 1)

        # A stream that disconnects keeps its last picture, marked as
        # disconnected, instead of turning black.
        sender.terminate()
        sender.wait(30)
        badge = card.find_element(By.CSS_SELECTOR, ".badge")
        wait.until(lambda d: badge.text == "disconnected")
        self.assertIn("offline", card.get_attribute("class"))
        wait.until(
            lambda d: "latest.jpg" in image.get_attribute("src")
            and d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 320
        )
        import cv2
        import numpy

        shot = cv2.imdecode(numpy.frombuffer(image.screenshot_as_png, numpy.uint8), cv2.IMREAD_GRAYSCALE)
        self.assertGreater(float(shot.mean()), 20.0, "the picture went black")
