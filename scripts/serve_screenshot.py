"""Screenshot of the `serve` page for the README: the real server and headless Chromium,
set up as in tests/test_serve_browser.py.

    python scripts/serve_screenshot.py training/gmb/hybrid_cpu/model-best docs/serve.png
"""

import argparse
import tempfile
from pathlib import Path

from spacy_hybridner.serve.browser import headless_chromium
from spacy_hybridner.serve.process import ServerProcess

TEXT = (
    "Thousands of demonstrators marched through London on Saturday to protest the war in Iraq. "
    "Prime Minister Tony Blair said Britain would keep its troops there until the Iraqi government "
    "asks them to leave, and the United Nations Security Council will meet in New York next week."
)


def screenshot(model: str, output: Path, text: str = TEXT, threshold: float = 0.0, size=(1100, 900)) -> Path:
    """Serve ``model``, annotate ``text`` on the page, set the slider and save a PNG.
    RETURNS (Path): the PNG written."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with ServerProcess(model, ["--no-access-log"]) as server, tempfile.TemporaryDirectory() as profile:
        driver = headless_chromium(Path(profile), window_size=size)
        try:
            driver.get(server.url + "/")
            WebDriverWait(driver, 30).until(
                lambda d: d.find_element(By.ID, "model-info").get_attribute("data-loaded") == "1"
            )
            box = driver.find_element(By.ID, "text")
            box.clear()
            box.send_keys(text)
            driver.find_element(By.ID, "annotate").click()
            WebDriverWait(driver, 30).until(
                lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-annotated") == "1"
            )
            driver.execute_script(
                "const s = document.getElementById('threshold'); s.value = arguments[0];"
                "s.dispatchEvent(new Event('input', {bubbles: true}));",
                threshold,
            )
            output.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(output))
        finally:
            driver.quit()
    try:  # a palette PNG is a fraction of the size and looks the same for this page
        from PIL import Image

        Image.open(output).convert("RGB").quantize(colors=128).save(output, optimize=True)
    except ImportError:
        pass
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="pipeline path or package name")
    parser.add_argument("output", type=Path, help="PNG to write, e.g. docs/serve.png")
    parser.add_argument("--text", default=TEXT, help="text to annotate")
    parser.add_argument("--threshold", type=float, default=0.0, help="confidence threshold to set on the slider")
    args = parser.parse_args()
    path = screenshot(args.model, args.output, args.text, args.threshold)
    print(f"{path}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
