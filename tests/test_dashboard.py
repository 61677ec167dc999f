"""The live page: served on loopback behind its token, showing the node's tables; seen in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

import actorkit as ray
from actorkit import runtime
from actorkit.dashboard import Dashboard


@ray.remote
class Shelf:
    def ping(self):
        return "pong"


@pytest.fixture
def page(ray_start_shared):
    shelf = Shelf.options(name="shelf-on-the-page").remote()
    assert ray.get(shelf.ping.remote()) == "pong"
    dashboard = Dashboard(runtime.current_client())
    yield dashboard
    dashboard.stop()
    ray.kill(shelf)


def test_page_and_state_need_the_token(page):
    html = urllib.request.urlopen(page.url, timeout=30).read().decode()
    assert "<title>actorkit</title>" in html and "shelf-on-the-page" in html and "Shelf" in html
    state = json.loads(urllib.request.urlopen(page.url.replace("/?", "/api/state?"), timeout=30).read())
    assert set(state) == {"nodes", "workers", "actors", "tasks", "objects"}
    assert any(a["name"] == "shelf-on-the-page" and a["state"] == "ALIVE" for a in state["actors"])
    for wrong in (f"http://127.0.0.1:{page.port}/", f"http://127.0.0.1:{page.port}/api/state?token=guess"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(wrong, timeout=30)
        assert info.value.code == 403


def test_init_with_dashboard_prints_its_url(shutdown_only, capsys):
    info = ray.init(num_cpus=1, dashboard=True)
    assert info["dashboard_url"] in capsys.readouterr().err
    assert urllib.request.urlopen(info["dashboard_url"], timeout=30).status == 200
    ray.shutdown()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(info["dashboard_url"], timeout=5)  # stopped with the driver


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_page_renders_in_a_headless_browser(page, tmp_path):
    shot = tmp_path / "dashboard.png"
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000", "--dump-dom", page.url],
        capture_output=True, text=True, timeout=120,
    )
    assert "shelf-on-the-page" in dom.stdout, dom.stderr[-2000:]
    assert "ALIVE" in dom.stdout
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900", f"--screenshot={shot}", page.url],
        capture_output=True, timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 5000
