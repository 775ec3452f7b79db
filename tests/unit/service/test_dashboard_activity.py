"""The Activity page's figures and charts, from task rows (no service needed)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from funcx_flows.service.ui.activity import percentile, summarize

START = 1_800_000_000.0
EP1, EP2 = "e1", "e2"


def _row(state: str, endpoint: str, received: float, completed: float | None) -> dict:
    return {"state": state, "endpoint_id": endpoint, "t_received": START + received,
            "t_completed": None if completed is None else START + completed}


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 95) == 95
    assert percentile(values, 99) == 99 and percentile([7.0], 99) == 7.0


def test_tasks_are_counted_in_the_minute_they_ended_and_latency_is_per_endpoint() -> None:
    rows = [_row("success", EP1, 0, 1.0), _row("success", EP1, 0, 2.0),
            _row("failed", EP1, 10, 61), _row("success", EP2, 100, 130),
            _row("cancelled", EP2, 5, 3599), _row("running", EP2, 5, None),
            _row("success", EP2, 0, 3600)]  # ended after the window: not counted
    out = summarize(rows, {EP1: "beamline", EP2: "hpc"}, START, 3600.0, 60.0, "hour")
    assert out["counts"] == {"success": 3, "failed": 1, "cancelled": 1} and out["total"] == 5
    by_name = {c["name"]: c for c in out["latency"]}
    assert by_name["beamline"]["count"] == 2 and by_name["beamline"]["p50"] == 1.0
    assert by_name["hpc"]["count"] == 1 and by_name["hpc"]["p95"] == 30.0
    bars = ET.fromstring(out["bars"])  # well-formed SVG
    titles = [t.text for t in bars.iter("{http://www.w3.org/2000/svg}title")]
    assert sum("success: 2" in (t or "") for t in titles) == 1  # both in the first minute
    assert sum("failed: 1" in (t or "") for t in titles) == 1
    for chart in by_name.values():
        ET.fromstring(chart["svg"])
    hpc = ET.fromstring(by_name["hpc"]["svg"])  # one task: no line, but its points show
    assert len(list(hpc.iter("{http://www.w3.org/2000/svg}circle"))) == 3  # p50, p95, p99


def test_names_in_charts_are_escaped() -> None:
    out = summarize([_row("success", EP1, 0, 1.0)], {EP1: "<script>x</script>"}, START,
                    3600.0, 60.0, "hour")
    assert "<script>" not in out["latency"][0]["svg"]
