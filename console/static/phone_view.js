// The surgeon's phone view: new photos appear without reloading (polling a small JSON
// endpoint), and the time since the injury (or the call) keeps counting.
// No inline script: the console's CSP allows scripts from this site only.
(function () {
  "use strict";
  var POLL_MS = 3000;        // a photo shows within a few seconds of its upload
  var BACKOFF_MAX_MS = 30000; // a lost network is retried, more slowly
  var list = document.getElementById("phone-photos");
  var status = document.getElementById("phone-live");
  var empty = document.getElementById("phone-no-photos");
  var since = document.getElementById("phone-since");
  var liveText = status ? status.textContent : "";
  var delay = POLL_MS;

  function text(tag, cls, value) {
    var el = document.createElement(tag);
    if (cls) { el.className = cls; }
    el.textContent = value;  // never innerHTML: a caller's note is hostile
    return el;
  }

  function add(photo) {
    if (list.querySelector('[data-photo-id="' + photo.id + '"]')) { return; }
    var li = document.createElement("li");
    li.className = "phone-photo new";
    li.setAttribute("data-photo-id", String(photo.id));
    var a = document.createElement("a");
    a.href = photo.full;
    var img = document.createElement("img");
    img.src = photo.thumb;
    img.alt = "#" + photo.id;
    a.appendChild(img);
    li.appendChild(a);
    li.appendChild(text("div", "muted", photo.at + " · " + photo.sender));
    if (photo.note) { li.appendChild(text("div", "photo-note", photo.note)); }
    list.appendChild(li);
    list.setAttribute("data-after", String(photo.id));
    if (empty) { empty.hidden = true; }
  }

  function poll() {
    var after = list.getAttribute("data-after") || "0";
    fetch(list.getAttribute("data-feed") + "?after=" + encodeURIComponent(after),
          {credentials: "same-origin", cache: "no-store", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (response.status === 401 || response.status === 403 || response.redirected) {
          status.textContent = status.getAttribute("data-stopped");
          throw new Error("stop");
        }
        if (!response.ok) { throw new Error("retry"); }
        return response.json();
      })
      .then(function (body) {
        (body.photos || []).forEach(add);
        status.textContent = liveText;
        delay = POLL_MS;
        window.setTimeout(poll, delay);
      })
      .catch(function (error) {
        if (error && error.message === "stop") { return; }
        status.textContent = status.getAttribute("data-offline");
        delay = Math.min(delay * 2, BACKOFF_MAX_MS);
        window.setTimeout(poll, delay);
      });
  }

  function tick() {
    var from = Date.parse(since.getAttribute("data-since"));
    if (isNaN(from)) { return; }
    var minutes = Math.max(0, Math.floor((Date.now() - from) / 60000));
    var h = Math.floor(minutes / 60), m = minutes % 60;
    var mm = (m < 10 ? "0" : "") + m;
    if (since.getAttribute("data-lang") === "zh") {
      since.textContent = h ? (h + "小时" + mm + "分") : (m + "分");
    } else {
      since.textContent = h ? (h + " h " + mm + " min") : (m + " min");
    }
  }

  if (list && list.getAttribute("data-feed")) { window.setTimeout(poll, POLL_MS); }
  if (since) { window.setInterval(tick, 30000); }
}());
