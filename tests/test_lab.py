"""The notebooks where learners run them: JupyterLab, started by `make lab`, driven in headless Chromium.

Notebooks 01 and 02 run in full, through Run > Run All Cells. Notebooks 03 and 04 train for minutes (nbval runs
them in full in `make test`), so here they run their setup: the cells above their first training cell, through
Run > Run All Above Selected Cell. For every notebook: the kernel it names starts without a dialog, no cell shows an
error (or anything on stderr), the figures of the cells that ran are drawn, and a screenshot of its top goes to
runs/screenshots/, with the two figures the README shows. JupyterLab's autosave is off, so the notebooks stay as
cloned. Skipped, saying how to install them, when Chromium or chromedriver is missing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

SCREENSHOTS = Path("runs/screenshots")
# notebook: text of its first training cell (the cells above it run), or None to run every cell
FIRST_TRAINING_CELL = {
    "01_sentence_transformer": None,
    "02_multi_task_heads": None,
    "03_freezing_tradeoffs": 'run("all"',
    "04_training_loop": "train(TrainConfig(",
}
# notebook: (text of the cell that draws a figure the README shows, screenshot file)
README_FIGURES = {
    "01_sentence_transformer": ("similarity_heatmap(", "01_similarity_heatmap.png"),
    "03_freezing_tradeoffs": ("compare_bars(", "03_tradeoffs.png"),
}
# autosave off keeps the notebooks as cloned; every cell in the page (no windowing); no news pop-up
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}
STARTUP_SECONDS, RUN_SECONDS = 300, 900
CELL = ".jp-Notebook .jp-Cell"

CELLS_JS = """
return Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')).map(cell => ({
    prompt: cell.querySelector('.jp-InputPrompt')?.textContent.trim() ?? '',
    stderr: Array.from(cell.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]'), o => o.innerText),
    figures: Array.from(cell.querySelectorAll('.jp-OutputArea-output img'))
        .filter(img => img.complete && img.naturalWidth > 0).length,
}));
"""
BUSY_JS = """
const status = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator')?.dataset.status;
const queued = Array.from(document.querySelectorAll('.jp-InputPrompt')).some(p => p.textContent.includes('*'));
return status !== 'idle' || queued;
"""


def find_browser(path: str | None = None) -> tuple[str, str]:
    """Chromium and chromedriver on ``path`` (default PATH); skips, saying how to install them, when absent."""
    browser = shutil.which("chromium", path=path) or shutil.which("chromium-browser", path=path)
    driver = shutil.which("chromedriver", path=path)
    if not (browser and driver):
        pytest.skip("JupyterLab browser test: Chromium or chromedriver not found; "
                    "install them with `apt-get install -y chromium chromium-driver` (Debian) to run it.")
    return browser, driver


def test_missing_browser_skips_saying_how_to_install(tmp_path):
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install -y chromium chromium-driver"):
        find_browser(path=str(tmp_path))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """`make lab` on a free local port with a token, its settings in a temporary folder; yields (URL, token)."""
    find_browser()
    folder = tmp_path_factory.mktemp("lab")
    for plugin, values in LAB_SETTINGS.items():
        file = folder / "settings" / f"{plugin}.jupyterlab-settings"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(values))
    env = os.environ | {"JUPYTERLAB_SETTINGS_DIR": str(folder / "settings"),
                        "JUPYTERLAB_WORKSPACES_DIR": str(folder / "workspaces")}
    port, token = free_port(), secrets.token_hex(16)
    options = f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token}"
    log = folder / "lab.log"
    with log.open("w") as out:
        server = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_OPTIONS={options}"],
                                  stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not api(url, token, "status"):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`make lab` did not serve {url}; its log ends:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, token
    finally:
        stop(server)


def api(url: str, token: str, path: str, method: str = "GET"):
    """Jupyter server's REST API: the JSON answer, or None while the server is not up."""
    request = urllib.request.Request(f"{url}/api/{path}", method=method, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
    except OSError:
        return None
    return json.loads(body) if body else {}


def stop(server: subprocess.Popen) -> None:
    """Stop make, JupyterLab and its kernels: SIGTERM lets the server shut its kernels down."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture(scope="module")
def browser(lab) -> Iterator[webdriver.Chrome]:
    chromium, chromedriver = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,960"):
        options.add_argument(argument)
    options.unhandled_prompt_behavior = "accept"  # "Leave site?" when moving on from a notebook with new outputs
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    yield driver
    driver.quit()


class Notebook:
    """One notebook open in JupyterLab, used as a learner would: menus, clicks, what the page shows."""

    def __init__(self, driver: webdriver.Chrome, url: str, token: str, name: str):
        self.driver, self.name = driver, name
        self.cells = json.loads(Path("notebooks", f"{name}.ipynb").read_text())["cells"]
        # a workspace of its own: the page shows this notebook alone
        driver.get(f"{url}/lab/workspaces/{name}/tree/{name}.ipynb?token={token}")
        WebDriverWait(driver, STARTUP_SECONDS).until(
            lambda d: self.dialog() or len(d.find_elements(By.CSS_SELECTOR, CELL)) == len(self.cells),
            message=f"{name}.ipynb did not open in JupyterLab within {STARTUP_SECONDS} s",
        )
        self.wait_until_idle(STARTUP_SECONDS, "start its kernel")

    def describe(self, index: int, prompt: str = "") -> str:
        first_line = "".join(self.cells[index]["source"]).strip().splitlines()[0]
        return f"{self.name}.ipynb, cell {index + 1} of {len(self.cells)} {prompt} `{first_line}`"

    def dialog(self) -> str:
        return " ".join(d.text for d in self.driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog"))

    def wait_until_idle(self, seconds: float, doing: str) -> None:
        """Until the kernel is idle and no cell is queued, twice in a row; a dialog fails at once."""
        deadline, quiet = time.monotonic() + seconds, 0
        while quiet < 2:
            if dialog := self.dialog():
                pytest.fail(f"{self.name}.ipynb: a dialog appeared while waiting to {doing}: {dialog}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}.ipynb: still busy after {seconds} s waiting to {doing}")
            quiet = 0 if self.driver.execute_script(BUSY_JS) else quiet + 1
            time.sleep(1)

    def menu(self, menu: str, command: str) -> None:
        """Open a menu of the menu bar and click one of its items."""
        title = f"//li[contains(@class, 'lm-MenuBar-item')][.//div[text()='{menu}']]"
        self.driver.find_element(By.XPATH, title).click()
        item = (By.CSS_SELECTOR, f".lm-Menu-item[data-command='{command}']")
        WebDriverWait(self.driver, 10).until(expected_conditions.element_to_be_clickable(item)).click()

    def cell(self, index: int):
        return self.driver.find_elements(By.CSS_SELECTOR, CELL)[index]

    def index_of(self, text: str) -> int:
        return next(i for i, cell in enumerate(self.cells) if text in "".join(cell["source"]))

    def screenshot(self, index: int, file: str, *, block: str = "start") -> None:
        """The page scrolled to cell ``index``: its top at the top, or with ``block="end"`` its end at the bottom."""
        self.driver.execute_script(f"arguments[0].scrollIntoView({{block: '{block}'}});", self.cell(index))
        time.sleep(0.5)  # let the scrolled page paint
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(SCREENSHOTS / file))


def check_cells(notebook: Notebook, ran: range) -> None:
    """No cell shows an error or stderr; every code cell in ``ran`` ran and drew its stored figures."""
    shown = notebook.driver.execute_script(CELLS_JS)
    for index, cell in enumerate(shown):
        if cell["stderr"]:
            last_lines = "\n".join(cell["stderr"][-1].strip().splitlines()[-12:])
            pytest.fail(f"{notebook.describe(index, cell['prompt'])} shows an error:\n{last_lines}")
    for index in ran:
        stored, cell = notebook.cells[index], shown[index]
        if stored["cell_type"] != "code":
            continue
        if not cell["prompt"].strip("[]:").isdigit():
            pytest.fail(f"{notebook.describe(index, cell['prompt'])} did not run")
        figures = sum("image/png" in output.get("data", {}) for output in stored["outputs"])
        if cell["figures"] < figures:
            pytest.fail(f"{notebook.describe(index, cell['prompt'])} drew {cell['figures']} of its {figures} figures")


@pytest.mark.parametrize("name", FIRST_TRAINING_CELL)
def test_notebook_runs_in_jupyterlab(name, lab, browser):
    url, token = lab
    notebook = Notebook(browser, url, token, name)
    started, named = [s["kernel"]["name"] for s in api(url, token, "sessions")], notebook_kernel(name)
    assert started == [named], f"{name}.ipynb names the kernel {named!r}; JupyterLab started {started}"
    first_training = FIRST_TRAINING_CELL[name]
    ran = range(notebook.index_of(first_training) if first_training else len(notebook.cells))
    figure_text, figure_file = README_FIGURES.get(name, (None, None))
    try:
        if figure_text and notebook.index_of(figure_text) not in ran:  # the stored figure, before outputs are cleared
            notebook.screenshot(notebook.index_of(figure_text), figure_file, block="end")
        notebook.menu("Edit", "editmenu:clear-all")
        if first_training:
            notebook.cell(ran.stop).find_element(By.CSS_SELECTOR, ".jp-InputPrompt").click()
            notebook.menu("Run", "notebook:run-all-above")
        else:
            notebook.menu("Run", "runmenu:run-all")
        notebook.wait_until_idle(RUN_SECONDS, "run its cells")
        check_cells(notebook, ran)
        if figure_text and notebook.index_of(figure_text) in ran:
            notebook.screenshot(notebook.index_of(figure_text), figure_file, block="end")
        notebook.screenshot(0, f"{name}.png")
    finally:
        browser.get("about:blank")
        for session in api(url, token, "sessions") or []:  # free the kernel's memory for the next notebook
            api(url, token, f"sessions/{session['id']}", method="DELETE")


def notebook_kernel(name: str) -> str:
    return json.loads(Path("notebooks", f"{name}.ipynb").read_text())["metadata"]["kernelspec"]["name"]
