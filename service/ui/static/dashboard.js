// Live updates for the dashboard's pages: one EventSource per page, fed by the
// service's hub (service/ui/live.py). No framework, no build step.
(function () {
  "use strict";
  var ENDED = ["success", "failed", "cancelled"];
  var live = document.getElementById("live");
  var refreshing = false;

  function refresh() {
    // Re-read this page and put its main part in place: no navigation, no flicker.
    if (refreshing) { return; }
    refreshing = true;
    fetch(location.href, {credentials: "same-origin"}).then(function (r) {
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var main = doc.getElementById("main");
        if (main) { document.getElementById("main").innerHTML = main.innerHTML; }
      }
    }).finally(function () { refreshing = false; });
  }

  function taskOnPage() {
    var t = document.getElementById("task");
    return t ? t.getAttribute("data-task-id") : null;
  }

  function apply(records) {
    var shown = taskOnPage();
    records.forEach(function (rec) {
      if (shown === rec.task_id) { refresh(); return; }
      document.querySelectorAll('[data-task-id="' + rec.task_id + '"] .state').forEach(
        function (cell) {
          cell.textContent = rec.state;
          cell.className = "state " + rec.state;
        });
    });
  }

  function endpoints(status) {
    // {endpoint id: {state, workers_busy, workers_total, ...}}: this viewer's only
    Object.keys(status).forEach(function (id) {
      var st = status[id];
      document.querySelectorAll('[data-endpoint-id="' + id + '"]').forEach(function (el) {
        el.querySelectorAll(".state").forEach(function (cell) {
          cell.textContent = st.state;
          cell.className = "state " + st.state;
        });
        el.querySelectorAll(".workers").forEach(function (cell) {
          cell.textContent = st.workers_busy + "/" + st.workers_total;
        });
      });
    });
  }

  var source = new EventSource("/ui/events");
  source.onopen = function () {
    if (live) { live.className = "live on"; }
    // whatever ended before the stream opened: read the page once more
    var state = document.getElementById("task-state");
    if (state && ENDED.indexOf(state.textContent.trim()) < 0) { refresh(); }
  };
  source.onerror = function () { if (live) { live.className = "live off"; } };
  source.addEventListener("tasks", function (ev) { apply(JSON.parse(ev.data)); });
  source.addEventListener("endpoints", function (ev) { endpoints(JSON.parse(ev.data)); });
  source.addEventListener("closed", function () {
    source.close();
    location.href = "/ui/login";
  });
})();
