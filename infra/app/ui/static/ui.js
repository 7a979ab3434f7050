// Draws the page's Plotly charts and refreshes the page's content in place every data-refresh seconds.
(function () {
  "use strict";
  function draw(root) {
    root.querySelectorAll("script[data-chart]").forEach(function (node) {
      var el = document.getElementById(node.getAttribute("data-chart"));
      if (!el) return;
      var fig = JSON.parse(node.textContent);
      Plotly.react(el, fig.data, fig.layout, {displaylogo: false, responsive: true});
    });
  }
  function status(text, down) {
    var el = document.getElementById("status");
    if (!el) return;
    el.textContent = text;
    el.className = down ? "down" : "";
  }
  function refresh() {
    var main = document.getElementById("content");
    // Never pull the page from under a person: not while hidden, typing, or holding ticked boxes.
    if (document.hidden || main.querySelector("input:checked, input:focus, select:focus")) return;
    fetch(window.location.href, {headers: {"X-ModelBus-Fragment": "1"}, cache: "no-store"})
      .then(function (resp) {
        return resp.text().then(function (body) { return {ok: resp.ok, status: resp.status, body: body}; });
      })
      .then(function (r) {
        if (r.status >= 500) { status("store unavailable (" + r.status + "); retrying", true); return; }
        main.innerHTML = r.body;
        draw(main);
        status("updated " + new Date().toLocaleTimeString(), false);
      })
      .catch(function () { status("UI server unreachable; retrying", true); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var main = document.getElementById("content");
    draw(document);
    var every = parseInt(main.getAttribute("data-refresh") || "0", 10);
    status("updated " + new Date().toLocaleTimeString(), false);
    if (every > 0) window.setInterval(refresh, every * 1000);
  });
})();
