"""The report makes no network request when opened (rigs.offline_check), checked with headless
Chromium: a page that fetches from outside is caught, request by request; an Allure report with
its analytics left on is caught; the report as `make run` builds it (analytics off) is clean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rigs import offline_check, report

pytestmark = pytest.mark.skipif(not any(shutil.which(b) for b in offline_check.BROWSERS),
                                reason="no headless Chromium (apt-get install chromium)")

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title>{head}</head>
<body><p>rendered report body with enough text to count as a page</p>{body}</body></html>"""


def _page(tmp_path: Path, head: str = "", body: str = "") -> Path:
    path = tmp_path / "index.html"
    path.write_text(PAGE.format(head=head, body=body), encoding="utf-8")
    return path


def test_a_page_fetching_from_outside_is_caught_request_by_request(tmp_path: Path) -> None:
    page = _page(tmp_path, head='<script src="http://198.18.0.99/x.js"></script>',
                 body='<img src="https://example.invalid/a.png"><script>'
                      'fetch("http://198.18.0.98/beacon").catch(() => {});</script>')
    verdict = offline_check.check(page, expect="rendered report body")
    assert not verdict.ok and verdict.rendered
    assert sorted(verdict.requests) == ["GET http://198.18.0.98/beacon",
                                        "GET http://198.18.0.99/x.js",
                                        "GET https://example.invalid/a.png"]
    assert "3 outside request(s) blocked" in verdict.describe()


def test_a_local_page_passes_and_one_that_did_not_render_proves_nothing(tmp_path: Path) -> None:
    (tmp_path / "local.js").write_text("document.body.dataset.ok = '1';", encoding="utf-8")
    page = _page(tmp_path, body='<script src="local.js"></script><img src="data:image/png;'
                                'base64,iVBORw0KGgo=">')
    verdict = offline_check.check(page, expect="rendered report body")
    assert verdict.ok and verdict.requests == ()
    blank = offline_check.check(page, expect="text the page does not have")
    assert not blank.ok and "did not render" in blank.describe()
    assert offline_check.main([str(tmp_path / "missing.html")]) == 1


ALLURE = report.REPO / "node_modules" / ".bin" / "allure"


@pytest.mark.skipif(not ALLURE.exists() or shutil.which("java") is None,
                    reason="the Allure commandline (npm install) and Java 17 are needed")
def test_the_allure_report_is_clean_only_with_its_analytics_off(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "a-result.json").write_text(json.dumps({
        "uuid": "a", "name": "a scenario", "fullName": "f.feature:a", "status": "passed",
        "start": 1, "stop": 2, "labels": [{"name": "feature", "value": "F"}]}))
    clean = report.generate_html(results, tmp_path / "clean")
    assert offline_check.check(clean, expect="Allure").ok
    env = {k: v for k, v in os.environ.items() if k != "ALLURE_NO_ANALYTICS"}
    subprocess.run([str(ALLURE), "generate", str(results), "--clean", "--single-file", "-o",
                    str(tmp_path / "tracked")], env=env, check=True, capture_output=True,
                   timeout=300, stdin=subprocess.DEVNULL)
    tracked = offline_check.check(tmp_path / "tracked" / "index.html", expect="Allure")
    assert not tracked.ok and any("google" in r for r in tracked.requests), tracked.requests
