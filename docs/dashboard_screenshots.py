"""Take the screenshots of docs/dashboard.md: a real service and endpoint, a few
tasks (some failing), a trigger report, and Debian's Chromium through Playwright.

    python docs/dashboard_screenshots.py   # writes docs/images/dashboard-*.png
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from funcx_flows.localstack import LocalStack

OUT = Path(__file__).resolve().parent / "images"


def reduce_frame(n: int) -> int:
    import time

    time.sleep(0.05 * (n % 5))
    if n % 7 == 3:
        raise ValueError(f"frame {n}: detector saturated, no peaks found")
    return n * n


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(Path(tmp) / "home")
        try:
            url = stack.start_service()
            ep = stack.start_endpoint("beamline-7", {"max_workers_per_node": 2})
            token = (stack.home / "token").read_text().strip()
            with stack.client() as c:
                ids = [c.run(reduce_frame, n, endpoint_id=ep.endpoint_id) for n in range(40)]
                while any(c.get_task(t)["state"] not in ("success", "failed")
                          for t in ids[-3:]):
                    time.sleep(0.2)
                failed = next(t for t in ids if c.get_task(t)["state"] == "failed")
                c.report_trigger_status({"process": "det01:beamline.yaml", "host": "det01",
                                         "triggers": [{"name": "frames", "kind": "files",
                                                       "watching": ["/data/beamline-7/raw"],
                                                       "files_seen": 1200,
                                                       "files_waiting": 3,
                                                       "runs": {"done": 1180, "failed": 2,
                                                                "queued": 3},
                                                       "lag_s": 1.4}]})
            OUT.mkdir(exist_ok=True)
            with sync_playwright() as p:
                b = p.chromium.launch(executable_path="/usr/bin/chromium",
                                      args=["--no-sandbox"])
                page = b.new_page(viewport={"width": 1100, "height": 700})
                page.goto(url + "/ui/login")
                page.screenshot(path=OUT / "dashboard-login.png")
                page.fill("#token", token)
                page.click("#sign-in")
                page.wait_for_url("**/ui/endpoints")
                shots = {"endpoints": "/ui/endpoints",
                         "endpoint": f"/ui/endpoints/{ep.endpoint_id}",
                         "tasks": "/ui/tasks", "task": f"/ui/tasks/{failed}",
                         "functions": "/ui/functions", "triggers": "/ui/triggers",
                         "activity": "/ui/activity"}
                for name, path in shots.items():
                    page.goto(url + path)
                    if name == "task":
                        page.click("#show-traceback")
                    page.screenshot(path=OUT / f"dashboard-{name}.png", full_page=True)
                b.close()
        finally:
            stack.stop()
    print(f"wrote {OUT}/dashboard-*.png")


if __name__ == "__main__":
    main()
