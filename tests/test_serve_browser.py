"""End to end: the real server in a child process, its page in headless Chromium.

Needs Debian's chromium and chromium-driver (`.ci/run` installs them); it fails, never
skips, without them.
"""

import pytest
import spacy

from spacy_hybridner.serve.browser import chromium_paths, headless_chromium
from spacy_hybridner.serve.process import ServerProcess

TEXT = "Tim Cook visited Berlin and Paris ."


@pytest.fixture(scope="module")
def server(model_dir):
    with ServerProcess(str(model_dir), ["--torch-threads", "1", "--no-access-log"]) as process:
        yield process


@pytest.fixture()
def browser(tmp_path):
    try:
        chromium_paths()
    except FileNotFoundError as error:
        pytest.fail(str(error))
    driver = headless_chromium(tmp_path / "profile")
    try:
        yield driver
    finally:
        driver.quit()


def test_page_shows_entities_and_the_slider_hides_them(server, browser, model_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    expected = [(e.text, e.label_, e._.confidence) for e in spacy.load(model_dir)(TEXT).ents]
    assert len({round(c, 3) for _, _, c in expected}) >= 2, "need entities of different confidence"

    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(EC.text_to_be_present_in_element((By.ID, "model-info"), "labels LOC, ORG, PER"))
    box = browser.find_element(By.ID, "text")
    box.clear()
    box.send_keys(TEXT)
    browser.find_element(By.ID, "annotate").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-annotated") == "1")
    assert not browser.find_element(By.ID, "error").is_displayed()

    # displaCy's marks: entity text, label and confidence; and the table of confidences.
    marks = browser.find_elements(By.CSS_SELECTOR, "#rendered div.entities mark.entity")
    assert [m.text for m in marks] == [f"{text} {label} {conf:.2f}" for text, label, conf in expected]
    rows = browser.find_elements(By.CSS_SELECTOR, "#ents tbody tr")
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert [(c[0], c[1]) for c in cells] == [(text, label) for text, label, _ in expected]
    assert [float(c[2]) for c in cells] == [pytest.approx(conf, abs=5e-4) for _, _, conf in expected]
    assert all(row.is_displayed() for row in rows)

    # Move the slider just above the lowest confidence: that entity's mark and row go.
    lowest = min(conf for _, _, conf in expected)
    threshold = round(lowest + 0.005, 2)
    browser.execute_script(
        "const s = document.getElementById('threshold'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input', {bubbles: true}));",
        threshold,
    )
    keep = [conf >= float(browser.find_element(By.ID, "threshold").get_attribute("value")) for _, _, conf in expected]
    assert 0 < sum(keep) < len(expected)
    labels_shown = [m.find_element(By.TAG_NAME, "span").is_displayed() for m in marks]
    assert labels_shown == keep
    assert ["below" not in (m.get_attribute("class") or "") for m in marks] == keep
    assert [row.is_displayed() for row in rows] == keep
    assert browser.find_element(By.ID, "shown").text == f"{sum(keep)} of {len(expected)} entities shown"
    assert TEXT.split()[0] in browser.find_element(By.ID, "rendered").text  # hidden entities stay as text

    # Back to 0: everything shows again.
    browser.execute_script(
        "const s = document.getElementById('threshold'); s.value = 0;"
        "s.dispatchEvent(new Event('input', {bubbles: true}));"
    )
    assert all(row.is_displayed() for row in rows)
    assert all(m.find_element(By.TAG_NAME, "span").is_displayed() for m in marks)


def test_page_asks_for_the_api_key_and_uses_it(model_dir, browser):
    import os

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    key = "browser-key-42"
    env = dict(os.environ, SPACY_HYBRIDNER_API_KEY=key)  # the key from the environment, not the command line
    with ServerProcess(str(model_dir), ["--torch-threads", "1", "--no-access-log"], env=env, api_key=key) as server:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(EC.text_to_be_present_in_element((By.ID, "model-info"), "Enter the API key"))
        key_box = browser.find_element(By.ID, "api-key")
        assert key_box.is_displayed()
        browser.find_element(By.ID, "annotate").click()  # without the key: the API's 401, shown
        wait.until(EC.text_to_be_present_in_element((By.ID, "error"), "Error 401"))
        key_box.send_keys(key)
        browser.find_element(By.ID, "annotate").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-annotated") == "1")
        assert not browser.find_element(By.ID, "error").is_displayed()
        assert browser.find_elements(By.CSS_SELECTOR, "#rendered mark.entity")
        wait.until(EC.text_to_be_present_in_element((By.ID, "model-info"), "labels LOC, ORG, PER"))
