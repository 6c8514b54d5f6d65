"""The status page and /metrics of a real `live run`: scraped with urllib and parsed by prometheus_client, looked at
and played by a real headless Chromium driven by selenium, and closed to anyone without the show's token."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pythonosc.osc_message import OscMessage

from fixtures_live import LiveProcess, free_port, run_live, show_with, wait_until
from live.control.osc_codec import encode_message
from test_run import camera_image, mean_diff, stylized

TOKEN = "s3cret-token-for-the-test"
CHROMEDRIVER, CHROMIUM = Path("/usr/bin/chromedriver"), Path("/usr/bin/chromium")


def get(url: str, token: str | None = None, header: bool = False) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None and header:
        request.add_header("Authorization", f"Bearer {token}")
    elif token is not None:
        request.full_url = f"{url}{'&' if '?' in url else '?'}token={token}"
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def metrics(base: str) -> dict[str, dict[tuple, float]]:
    """name -> {labels: value} of every sample /metrics gives."""
    code, body = get(f"{base}/metrics", TOKEN, header=True)
    assert code == 200, body
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def browser(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's own errors, for the test
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def shown_thumbnail(driver) -> np.ndarray | None:
    """The picture the page's thumbnail <img> shows now, read back through a canvas (what the browser decoded)."""
    data = driver.execute_script("""
        const img = document.getElementById("thumb");
        if (!img.complete || !img.naturalWidth) return null;
        const c = document.createElement("canvas");
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        c.getContext("2d").drawImage(img, 0, 0);
        return c.toDataURL("image/png");""")
    if not data:
        return None
    png = np.frombuffer(base64.b64decode(data.split(",", 1)[1]), np.uint8)
    return cv2.imdecode(png, cv2.IMREAD_COLOR)


def test_metrics_and_page_of_a_running_show(tmp_path, camera_file):
    """One show, bound to every address with a token: the token is enforced, /metrics counts and measures, and a
    browser sees the output and moves a control that changes it (and OSC feedback hears it)."""
    osc, port = free_port(), free_port()
    show = show_with(tmp_path, osc={"port": osc}, audio={"enabled": False},
                     status={"port": port, "bind": "0.0.0.0", "token": TOKEN})
    live = LiveProcess(["run", str(show), "--source", str(camera_file), "--for", "60"])
    try:
        line = live.wait_for("Status: http://")
        assert f":{port}/ (token required)" in line and TOKEN not in line  # the secret is never printed
        live.wait_for("Playing")
        base = f"http://127.0.0.1:{port}"

        # the token: none or a wrong one is 401 (and counted); the right one, as header or query, is let in
        assert get(f"{base}/metrics")[0] == 401
        assert get(f"{base}/metrics", "wrong-token", header=True)[0] == 401
        assert get(f"{base}/health", "wrong-token")[0] == 401
        assert get(f"{base}/health", TOKEN)[0] == 200

        # /metrics, parsed as Prometheus parses it: frames rise, latency is measured, uptime grows
        assert wait_until(lambda: metrics(base)["live_latency_seconds_count"][()] > 0, timeout=15, every=0.2)
        first = metrics(base)
        time.sleep(1.0)
        second = metrics(base)
        assert second["live_frames_total"][()] > first["live_frames_total"][()] > 0
        assert second["live_uptime_seconds"][()] >= first["live_uptime_seconds"][()] + 0.9
        count = second["live_latency_seconds_count"][()]
        buckets = second["live_latency_seconds_bucket"]
        assert buckets[(("le", "+Inf"),)] == count > 0
        assert 0 < second["live_latency_seconds_sum"][()] / count < 2.0
        assert buckets[(("le", "2.0"),)] <= count and buckets[(("le", "0.005"),)] <= buckets[(("le", "0.1"),)]
        p50, p95 = (second["live_latency_recent_seconds"][(("quantile", q),)] for q in ("0.5", "0.95"))
        assert 0 < p50 <= p95 < 2.0
        assert second["live_fps"][()] > 1
        assert second["live_status_refused_total"][()] == 3
        assert second["live_restarts_total"][()] == 0 and second["live_reloads_total"][(("result", "applied"),)] == 0
        up = second["live_device_up"]
        assert up[(("part", "capture"),)] == up[(("part", "chain"),)] == up[(("part", "status"),)] == 1
        for name in ("live_frames_dropped_total", "live_camera_frames_skipped_total", "live_audio_underruns_total",
                     "live_problems_total"):
            assert name in second
        assert set(second["live_osc_messages_total"]) == {(("result", "ok"),), (("result", "error"),)}

        # an OSC client that asked for feedback hears what the page changes
        feedback = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        feedback.bind(("127.0.0.1", 0))
        feedback.settimeout(0.2)
        feedback.sendto(encode_message("/live/feedback/add", []), ("127.0.0.1", osc))

        if not CHROMEDRIVER.exists():
            pytest.skip("no /usr/bin/chromedriver: install Debian's chromium and chromium-driver "
                        "(scripts/install-system.sh) for the browser half of this test")
        driver = browser(tmp_path)
        try:
            driver.get(f"{base}/?token={TOKEN}")
            camera = cv2.resize(camera_image(camera_file), (320, 240), interpolation=cv2.INTER_AREA)
            painted = cv2.resize(stylized(camera_image(camera_file)), (320, 240), interpolation=cv2.INTER_AREA)
            assert wait_until(lambda: (shown_thumbnail(driver) is not None), timeout=10, every=0.2)
            thumbnail = shown_thumbnail(driver)
            assert thumbnail.shape == (240, 320, 3)  # ~320 px wide, the output's aspect
            assert mean_diff(thumbnail, painted) < 6 < 10 < mean_diff(thumbnail, camera)  # the stylized output
            assert wait_until(lambda: "fps" in driver.find_element("id", "health").text, timeout=5, every=0.2)
            assert "capture" in driver.find_element("id", "parts").text

            from selenium.webdriver.common.keys import Keys

            strength = driver.find_element("css selector", 'input[data-address="/video/strength"]')
            assert float(strength.get_attribute("value")) == 1.0
            strength.send_keys(Keys.HOME)  # a user takes the slider to its minimum: the camera, unstyled
            assert wait_until(lambda: mean_diff(shown_thumbnail(driver), camera) < 6, timeout=10, every=0.2), \
                mean_diff(shown_thumbnail(driver), camera)
            errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
            assert not errors, errors  # the page's script ran without an error
        finally:
            driver.quit()

        heard = {}
        deadline = time.monotonic() + 5
        while heard.get("/video/strength") != 0.0 and time.monotonic() < deadline:
            try:
                message = OscMessage(feedback.recv(65536))
            except (TimeoutError, ValueError):
                continue
            heard[message.address] = message.params[0] if message.params else None
        assert heard.get("/video/strength") == 0.0, heard
        feedback.close()

        # the JSON endpoint refuses what OSC refuses, with the reason
        def post(body: dict) -> tuple[int, dict]:
            request = urllib.request.Request(f"{base}/params?token={TOKEN}", json.dumps(body).encode(),
                                             {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read())

        assert post({"address": "/no/such", "value": 1})[0] == 404
        code, answer = post({"address": "/video/style_a", "value": "no-such-style"})
        assert code == 400 and "not one of" in answer["error"]
    finally:
        live.proc.terminate()
        code, output = live.finish()
    assert code == 0, output
    assert "Traceback" not in output


def test_status_on_the_network_without_a_token_is_refused(tmp_path):
    show = show_with(tmp_path, osc={"port": free_port()}, audio={"enabled": False},
                     status={"port": free_port(), "bind": "0.0.0.0"})
    result = run_live(["run", str(show), "--source", "builtin", "--for", "1", "--no-window"])
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "[status] token" in output and "bind" in output and "Traceback" not in output, output


def test_loopback_page_answers_only_to_loopback_names_and_a_taken_port_is_said(tmp_path):
    """Without a token a page elsewhere must not reach the controls by a rebound name; a taken port does not stop
    the show. Problems and restarts are read as the show says and `live supervise` writes them."""
    import http.client

    from live.health import Problems, restarts
    from live.service import history_path
    from live.status_page import StatusPage, StatusSection

    said: list[str] = []
    page = StatusPage(StatusSection(port=free_port()), said.append)
    line = page.open()
    try:
        port = int(line.rsplit(":", 1)[1].strip("/"))
        for host, expected in ((f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200), (f"evil.example:{port}", 403)):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.putrequest("GET", "/metrics", skip_host=True)
            connection.putheader("Host", host)
            connection.endheaders()
            assert connection.getresponse().status == expected, host
            connection.close()
        taken = StatusPage(StatusSection(port=port), said.append)
        assert taken.open() == "" and taken.status() == ""
        assert f"cannot listen on 127.0.0.1:{port}" in said[-1] and "[status] port" in said[-1]
    finally:
        page.close()
    assert page.stats()["refused"] == 1

    problems = Problems(said.append)
    for text in ("Source: camera plays", "Output: disk full; closed it, the show goes on", "Cue: go"):
        problems.say(text)
    assert problems.total == 1 and [text for _, text in problems.recent] == [said[-2]]
    show = tmp_path / "show.toml"
    assert restarts(show) == 0
    history_path(show).write_text(json.dumps([{"at": 1, "cause": "exited with code 1"}] * 3))
    assert restarts(show) == 3
