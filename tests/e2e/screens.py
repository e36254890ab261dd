"""Headless Debian chromium driven by Selenium through chromium-driver: the frontend as a person sees it."""

import os
import shutil
import tempfile
import time
from urllib.parse import urlencode

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
_EXPANDED_TAB = "li.tabfilter-item-label.expanded a.tabfilter-item-link"
_ACTIVE_TIME_TAB = "li.ui-tabs-active a.btn-time"
# Loaded, no jQuery request pending, no loading indicator (charts.view marks a graph being drawn
# with .is-loading), and every image loaded; the graphs' <img> in #charts must have a source.
_SETTLED_JS = """
return document.readyState === 'complete'
    && !(window.jQuery && window.jQuery.active)
    && !document.querySelector('.is-loading')
    && Array.from(document.images).every(img => img.complete)
    && Array.from(document.querySelectorAll('#charts img')).every(img => img.getAttribute('src') && img.naturalWidth > 0);
"""


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

    def _until(self, what: str, condition, timeout: float = 60) -> None:
        """Poll `condition(driver)` (first at once, then every 0.2 s) until it is true."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(condition)
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: "
                                 f"{self.driver.current_url}: {self._body()[:500]}") from None

    def _settled(self) -> None:
        """The page loaded, no request of its scripts pending, its graphs drawn."""
        self._until("the page to settle", lambda driver: driver.execute_script(_SETTLED_JS))

    def _expanded_filter_tabs(self) -> list:
        from selenium.webdriver.common.by import By

        return (self.driver.find_elements(By.CSS_SELECTOR, _EXPANDED_TAB)
                or self.driver.find_elements(By.CSS_SELECTOR, _ACTIVE_TIME_TAB))

    def _shot(self, url: str, path: str, collapse_filter: bool = False, element: str = "") -> str:
        """Open `url`, save the page (or only the CSS `element` of it: readable at the width of a
        README) to `path`, return the page's text."""
        self.driver.get(url)
        self._settled()
        if collapse_filter:  # click the filter tab like a person would, to show more rows
            tabs = self._expanded_filter_tabs()
            if tabs:
                tabs[0].click()
                self._until("the filter to collapse", lambda driver: not self._expanded_filter_tabs())
                self._settled()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if element:
            from selenium.webdriver.common.by import By

            self.driver.find_element(By.CSS_SELECTOR, element).screenshot(path)
        else:
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
        return self._shot(f"{web}/zabbix.php?{query}", path, collapse_filter=True)

    def _kiosk_shot(self, web: str, query: list, path: str, element: str, collapse_filter: bool = False) -> str:
        """_shot() of a page in kiosk mode (no menu: the content gets the whole window). Kiosk mode
        is a setting of the user, so the page is opened once more without it before returning."""
        try:
            return self._shot(f"{web}/zabbix.php?{urlencode(query + [('kiosk', 1)])}", path,
                              collapse_filter=collapse_filter, element=element)
        finally:
            self.driver.get(f"{web}/zabbix.php?{urlencode(query + [('kiosk', 0)])}")
            self._settled()

    def dashboard(self, web: str, hostid: str, path: str) -> str:
        """The host's template dashboard ("TCP ports") over the last 15 minutes, its widgets only."""
        query = [("action", "host.dashboard.view"), ("hostid", hostid), ("from", "now-15m"), ("to", "now")]
        return self._kiosk_shot(web, query, path, ".dashboard-grid")

    def problems(self, web: str, hostid: str, path: str, ports: list) -> str:
        """Monitoring > Problems for one host and the problems tagged with one of `ports` (the
        template tags every per-port problem port=<port>), the filter folded, the list only."""
        query = [("action", "problem.view"), ("filter_set", 1), ("hostids[]", hostid), ("show_tags", 0),
                 ("evaltype", 2)]  # 2: tags combined with Or
        for index, port in enumerate(ports):
            query += [(f"tags[{index}][tag]", "port"), (f"tags[{index}][operator]", 1),  # 1: equals
                      (f"tags[{index}][value]", port)]
        return self._kiosk_shot(web, query, path, "table.list-table", collapse_filter=True)
