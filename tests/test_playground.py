"""The playground page at `/`, driven in a real headless Chromium.

One server with the real default model and n-gram drafts (K=4), one browser for the
module. A grounded "repeat this" prompt makes n-gram drafts pass, so the streamed output
holds accepted tokens. A screenshot lands in test-artifacts/playground.png (and the
test's tmp dir) so a person can judge the page by eye.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
except ImportError:
    selenium = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"),
    pytest.mark.skipif(selenium is None, reason="needs selenium (pip install -e '.[test]')"),
]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PROMPT = ("Repeat this text exactly: The quick brown fox jumps over the lazy dog. "
          "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.")
FATES = ("accepted", "recovered", "bonus", "plain")
TIMEOUT = 60.0  # every wait in this file is bounded by this


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("playground") / "server.log"
    cmd = [sys.executable, "-m", "specdec.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", "1",
           "--speculative-algorithm", "ngram", "--speculative-num-draft-tokens", "4", "--max-model-len", "1024"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"server not ready:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="specdec-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1100"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    d.set_page_load_timeout(TIMEOUT)
    d.set_script_timeout(TIMEOUT)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(driver, server_url):
    driver.get(server_url + "/")
    return driver


def wait(d, condition, message: str, timeout: float = TIMEOUT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(d, timeout, poll_frequency=0.1).until(condition, message)


def by_id(d, id_: str):
    from selenium.webdriver.common.by import By

    return d.find_element(By.ID, id_)


def save_screenshot(d, tmp_path: Path) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / "playground.png"
    d.save_screenshot(str(target))
    shutil.copy(target, tmp_path / "playground.png")
    return target


def set_value(d, id_: str, value: str) -> None:
    el = by_id(d, id_)
    el.clear()
    el.send_keys(value)


def background(d, el) -> str:
    return d.execute_script("return getComputedStyle(arguments[0]).backgroundColor", el)


def test_page_loads(page):
    from selenium.webdriver.common.by import By

    assert page.title == "specdec playground"
    wait(page, lambda d: "speculative: ngram" in by_id(d, "model-info").text, "model info never loaded")
    assert by_id(page, "prompt").is_displayed() and by_id(page, "prompt").is_enabled()
    for name in ("run", "compare"):
        assert by_id(page, name).is_displayed() and by_id(page, name).is_enabled()
    assert not by_id(page, "stop").is_enabled()
    legend = page.find_elements(By.CSS_SELECTOR, ".legend .tok")
    assert [e.text for e in legend] == ["accepted", "recovered", "bonus", "plain", "rejected draft"]
    colours = [background(page, e) for e in legend[:4]]
    assert len(set(colours)) == 4, colours  # each fate has its own colour
    errors = [e["message"] for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []  # no failed fetches, no script errors


def test_mode_switch_hides_system_prompt(page):
    from selenium.webdriver.support.ui import Select

    assert by_id(page, "system").is_displayed()
    Select(by_id(page, "mode")).select_by_value("completion")
    assert not by_id(page, "system").is_displayed()
    Select(by_id(page, "mode")).select_by_value("chat")
    assert by_id(page, "system").is_displayed()


def test_run_streams_tokens_coloured_by_fate(page, tmp_path):
    from selenium.webdriver.common.by import By

    set_value(page, "prompt", PROMPT)
    set_value(page, "max_tokens", "48")
    by_id(page, "run").click()
    # streaming: Stop is live and tokens arrive before the run ends
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#output .tok"), "no tokens streamed")
    wait(page, lambda d: by_id(d, "run").is_enabled(), "run never finished")
    status = by_id(page, "status").text
    assert re.fullmatch(r"\d+ tokens in \d+\.\d\d s", status), status

    spans = page.find_elements(By.CSS_SELECTOR, "#output .tok:not(.rejected)")
    fates = [s.get_attribute("title") for s in spans]
    assert set(fates) <= set(FATES) and "accepted" in fates, fates
    assert all(s.get_attribute("class") == f"tok fate-{f}" for s, f in zip(spans, fates))
    text = by_id(page, "output").text
    assert "quick brown fox" in text, text
    # a token's colour is its fate's: same as the legend, different across fates
    legend = {f: background(page, page.find_element(By.CSS_SELECTOR, f".legend .fate-{f}")) for f in FATES}
    for s, f in zip(spans, fates):
        assert background(page, s) == legend[f]
    assert len({background(page, s) for s in spans}) == len(set(fates))

    # live stats are numbers that agree with what was drawn
    stat = {k: by_id(page, f"s-{k}").text for k in ("tps", "tokens", "rate", "len", "steps", "time")}
    assert int(stat["tokens"]) == int(status.split()[0]) >= len(spans)  # special tokens count, unshown
    assert not any(re.fullmatch(r"<\|[^|]*\|>", s.text.strip()) for s in spans)  # <|im_end|> hidden
    assert float(stat["tps"]) > 0
    assert 0 < float(stat["rate"].rstrip("%")) <= 100
    assert 1 < float(stat["len"]) <= 5  # K=4 drafts plus the bonus
    assert re.fullmatch(r"\d+ \(\d+ drafting\)", stat["steps"]), stat["steps"]
    assert re.fullmatch(r"\d+\.\d\d s", stat["time"]), stat["time"]
    bars = page.find_elements(By.CSS_SELECTOR, "#positions .bar")
    assert [b.find_element(By.TAG_NAME, "span").text for b in bars] == ["1", "2", "3", "4"]  # x axis
    assert all(re.fullmatch(r"\d+%", b.find_element(By.CLASS_NAME, "value").text) for b in bars)  # values
    painted = page.execute_script(
        "const c = document.getElementById('chart');"
        "return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((v, i) => i % 4 === 3 && v).length;")
    assert painted > 0

    # rejected drafts are hidden until asked for
    rejected = page.find_elements(By.CSS_SELECTOR, "#output .rejected")
    assert not any(r.is_displayed() for r in rejected)
    by_id(page, "show-rejected").click()
    assert all(r.is_displayed() for r in rejected)
    save_screenshot(page, tmp_path)


def test_compare_shows_both_timings(page, tmp_path):
    from selenium.webdriver.common.by import By

    set_value(page, "max_tokens", "32")
    by_id(page, "compare").click()
    wait(page, lambda d: by_id(d, "compare-result").is_displayed(), "compare never finished")
    assert by_id(page, "status").text == "compared"
    rows = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in page.find_elements(By.CSS_SELECTOR, "#compare-result tr")[1:]]
    assert [r[0] for r in rows] == ["speculative", "plain"]
    for _, seconds, tokens, tps in rows:
        assert re.fullmatch(r"\d+\.\d\d s", seconds) and float(seconds[:-2]) > 0
        assert int(tokens) > 0 and float(tps) > 0
    assert rows[0][2] == rows[1][2]  # greedy: both runs make the same tokens
    verdict = by_id(page, "compare-verdict").text  # same seed for both: lossless means identical
    assert re.fullmatch(r"identical: \d+ tokens, seed \d+", verdict), verdict
    speedup = by_id(page, "compare-result").find_elements(By.TAG_NAME, "p")[1].text
    assert re.fullmatch(r"speedup \d+\.\d\dx \(wall time\)", speedup), speedup
    # one tokens/s definition: the compare table's speculative row is the stats card's figure
    assert rows[0][3] == by_id(page, "s-tps").text
    save_screenshot(page, tmp_path)
