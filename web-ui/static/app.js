// Rainbow web UI: optional enhancements; every page works without JavaScript.
// 1. Lineage: drag to pan (the container scrolls), ctrl/cmd + wheel to zoom.
// 2. Lineage: node states refresh from the page's JSON twin every few seconds, without
//    laying out again (only class names change).
(function () {
  "use strict";
  function lineage() {
    var box = document.getElementById("lineage");
    var svg = document.getElementById("lineage-svg");
    if (!box || !svg) return;
    var baseW = parseFloat(svg.getAttribute("width")), baseH = parseFloat(svg.getAttribute("height"));
    var scale = 1, drag = null;
    box.addEventListener("mousedown", function (e) {
      if (e.target.closest("a")) return;
      drag = { x: e.clientX, y: e.clientY, left: box.scrollLeft, top: box.scrollTop };
      box.style.cursor = "grabbing";
    });
    window.addEventListener("mouseup", function () { drag = null; box.style.cursor = ""; });
    window.addEventListener("mousemove", function (e) {
      if (!drag) return;
      box.scrollLeft = drag.left - (e.clientX - drag.x);
      box.scrollTop = drag.top - (e.clientY - drag.y);
    });
    box.addEventListener("wheel", function (e) {
      if (!(e.ctrlKey || e.metaKey)) return;
      e.preventDefault();
      scale = Math.min(3, Math.max(0.05, scale * (e.deltaY < 0 ? 1.15 : 1 / 1.15)));
      svg.setAttribute("width", String(baseW * scale));
      svg.setAttribute("height", String(baseH * scale));
    }, { passive: false });
    var period = parseInt(box.getAttribute("data-poll") || "0", 10);
    if (!period) return;
    function refresh() {
      var url = new URL(window.location.href);
      url.searchParams.set("format", "json");
      fetch(url.toString(), { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data || !data.nodes) return;
          data.nodes.forEach(function (n) {
            var g = document.getElementById(n.id);
            if (!g) return;
            var cls = "node " + n.state + (n.assets > 1 || !n.asset ? " group" : "");
            if (g.getAttribute("class") !== cls) g.setAttribute("class", cls);
            // The sub-label starts with the state word: keep it in step with the colour.
            var sub = g.querySelector("text.sub[data-state]");
            if (sub && sub.getAttribute("data-state") !== n.state) {
              var old = sub.getAttribute("data-state");
              sub.textContent = n.state + sub.textContent.slice(old.length);
              sub.setAttribute("data-state", n.state);
            }
          });
        })
        .catch(function () {});
    }
    setInterval(refresh, period);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", lineage);
  else lineage();
})();
