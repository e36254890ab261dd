"""Headless Debian chromium driven by Selenium through chromium-driver: the frontend as a person sees it."""

import os
import shutil
import tempfile
import time
from urllib.parse import urlencode

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class Browser:
    def __init__(self, width: int = 1600, height: int = 1250) -> None:
        self.width, self.height = width, height
        self.profile = None
        self.driver = None

    def __enter__(self) -> "Browser":
        os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch anything
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="tcp-lld-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--lang=en-US", f"--window-size={self.width},{self.height}",
                    f"--user-data-dir={self.profile}"):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(60)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.driver:
                self.driver.quit()
        finally:
            if self.profile:
                shutil.rmtree(self.profile, ignore_errors=True)

    def _body(self) -> str:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.TAG_NAME, "body").text

    def login(self, web: str, user: str, password: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.get(f"{web}/index.php")
        self.driver.find_element(By.NAME, "name").send_keys(user)
        self.driver.find_element(By.NAME, "password").send_keys(password)
        self.driver.find_element(By.NAME, "enter").click()
        deadline = time.monotonic() + 30
        while "Sign in" in self.driver.title or "action=dashboard" not in self.driver.current_url:
            if time.monotonic() > deadline:
                raise AssertionError(f"login failed: {self.driver.current_url}: {self._body()[:500]}")
            time.sleep(0.5)

    def _shot(self, url: str, path: str, settle: float = 3.0, collapse_filter: bool = False) -> str:
        from selenium.webdriver.common.by import By

        self.driver.get(url)
        time.sleep(settle)
        if collapse_filter:  # click the filter tab like a person would, to show more rows
            tabs = (self.driver.find_elements(By.CSS_SELECTOR, "li.tabfilter-item-label.expanded a.tabfilter-item-link")
                    or self.driver.find_elements(By.CSS_SELECTOR, "li.ui-tabs-active a.btn-time"))
            if tabs:
                tabs[0].click()
                time.sleep(1)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.driver.save_screenshot(path)
        return self._body()

    def latest_data(self, web: str, hostid: str, path: str, name: str = "") -> str:
        query = urlencode({"action": "latest.view", "hostids[]": hostid, "name": name, "filter_set": 1,
                           "show_details": 0})
        return self._shot(f"{web}/zabbix.php?{query}", path, collapse_filter=True)

    def graph(self, web: str, hostid: str, name: str, path: str) -> str:
        """The host's graphs whose name contains `name`, over the last 5 minutes."""
        query = urlencode({"action": "charts.view", "filter_hostids[]": hostid, "filter_name": name,
                           "filter_show": 1, "filter_set": 1, "from": "now-5m", "to": "now"})
        return self._shot(f"{web}/zabbix.php?{query}", path, settle=5.0, collapse_filter=True)
