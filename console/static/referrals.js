/* Time since injury, ticking: every element with data-injured-at gets its text
   ("2小时05分" / "2 h 05 min") and, when data-hours="urgent,critical,beyond" is
   given, its urgency class (and the .urgency-word label beside it, from
   data-words) recomputed every 30 s. The thresholds come from the
   server (network/referrals.py ISCHAEMIA_HOURS), so the rule lives in one place;
   the page is right without this script, only frozen at the time it was drawn. */
(function () {
  "use strict";
  var LEVELS = ["urgency-ok", "urgency-urgent", "urgency-critical", "urgency-beyond"];

  function elapsed(ms, lang) {
    var minutes = Math.max(0, Math.floor(ms / 60000));
    var hours = Math.floor(minutes / 60);
    var rest = minutes % 60;
    var mm = (rest < 10 ? "0" : "") + rest;
    if (hours >= 48) {
      var days = Math.floor(hours / 24);
      hours = hours % 24;
      return lang === "en" ? days + " d " + hours + " h" : days + "天" + hours + "小时";
    }
    return lang === "en" ? hours + " h " + mm + " min" : hours + "小时" + mm + "分";
  }

  function tick() {
    var now = Date.now();
    var nodes = document.querySelectorAll("[data-injured-at]");
    Array.prototype.forEach.call(nodes, function (node) {
      var at = Date.parse(node.getAttribute("data-injured-at"));
      if (isNaN(at)) { return; }
      var ms = now - at;
      node.textContent = elapsed(ms, node.getAttribute("data-lang"));
      var hours = (node.getAttribute("data-hours") || "").split(",").map(parseFloat);
      if (hours.length !== 3 || hours.some(isNaN)) { return; }
      var h = ms / 3600000;
      var level = h >= hours[2] ? 3 : h >= hours[1] ? 2 : h >= hours[0] ? 1 : 0;
      LEVELS.forEach(function (name) { node.classList.remove(name); });
      node.classList.add(LEVELS[level]);
      var labels = (node.getAttribute("data-words") || "").split("|");
      var label = node.parentNode && node.parentNode.querySelector(".urgency-word");
      if (label && labels.length === LEVELS.length) { label.textContent = labels[level]; }
    });
  }

  tick();
  window.setInterval(tick, 30000);
}());
