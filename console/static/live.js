/* The live page: fetch /live/calls.json every couple of seconds and redraw the
   calls in progress and the chains, without a reload. Everything from the
   server is set as text (textContent), never as HTML: a caller ID is hostile. */
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root || !window.fetch) { return; }
  var src = root.getAttribute("data-src");
  var every = parseInt(root.getAttribute("data-every") || "2000", 10) || 2000;
  var timer = null;

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }

  function cell(tr, text, cls) {
    var td = el("td", text, cls);
    tr.appendChild(td);
    return td;
  }

  function replaceBody(table, rows) {
    var old = table.tBodies[0];
    var body = document.createElement("tbody");
    rows.forEach(function (row) { body.appendChild(row); });
    if (old) { table.replaceChild(body, old); } else { table.appendChild(body); }
  }

  function drawStatus(ami) {
    var p = document.getElementById("ami-status");
    if (!p) { return; }
    p.textContent = ami.message || "";
    p.className = "ami " + (ami.ok ? "good" : "bad");
    p.setAttribute("data-status", ami.status || "");
  }

  function drawCalls(data) {
    var table = document.getElementById("live-calls");
    if (!table) { return; }
    var rows = (data.calls || []).map(function (c) {
      var tr = el("tr", null, "call state-" + String(c.state || "") + (c.forged ? " forged" : ""));
      tr.setAttribute("data-linkedid", String(c.linkedid || ""));
      var who = cell(tr, c.caller || "", "caller");
      if (c.caller_name) { who.appendChild(document.createTextNode(" ")); who.appendChild(el("span", c.caller_name, "muted")); }
      if (c.forged) { who.appendChild(document.createTextNode(" ")); who.appendChild(el("span", root.getAttribute("data-forged"), "bad")); }
      cell(tr, c.state_label || "");
      cell(tr, c.duration || "", "num");
      cell(tr, c.team_name || "");
      cell(tr, [c.target_name || "", c.target || ""].join(" ").trim());
      var caseCell = cell(tr, "");
      if (c.case_id) {
        var url = String(c.case_url || "");
        if (url.charAt(0) === "/" && url.charAt(1) !== "/") {
          var a = el("a", c.case_id);
          a.setAttribute("href", url);
          caseCell.appendChild(a);
        } else {
          caseCell.textContent = String(c.case_id);
        }
      }
      return tr;
    });
    if (!rows.length) {
      var tr = el("tr", null, "empty");
      var td = cell(tr, data.ami && !data.ami.ok ? data.ami.message : root.getAttribute("data-no-calls"), "muted");
      td.setAttribute("colspan", "6");
      rows.push(tr);
    }
    replaceBody(table, rows);
    var updated = document.getElementById("live-updated");
    if (updated && data.at) { updated.textContent = String(data.at).slice(11, 19); }
  }

  function drawChains(chains) {
    var box = document.getElementById("live-chains");
    if (!box) { return; }
    var parts = (chains || []).map(function (chain) {
      var div = el("div", null, "chain");
      div.setAttribute("data-team", String(chain.team || ""));
      div.appendChild(el("h3", chain.name || chain.team));
      if (!chain.members || !chain.members.length) {
        div.appendChild(el("p", root.getAttribute("data-nobody"), "gap"));
        return div;
      }
      var table = el("table");
      var head = el("thead");
      var htr = el("tr");
      (root.getAttribute("data-chain-heads") || "").split("\t").forEach(function (h) { htr.appendChild(el("th", h)); });
      head.appendChild(htr);
      table.appendChild(head);
      var body = document.createElement("tbody");
      chain.members.forEach(function (m) {
        var tr = el("tr");
        [m.position, m.role_label, m.name, m.phone, m.until].forEach(function (v) { cell(tr, v); });
        body.appendChild(tr);
      });
      table.appendChild(body);
      div.appendChild(table);
      return div;
    });
    while (box.firstChild) { box.removeChild(box.firstChild); }
    parts.forEach(function (p) { box.appendChild(p); });
  }

  function offline() {
    var p = document.getElementById("ami-status");
    if (p) {
      p.textContent = root.getAttribute("data-offline");
      p.className = "ami bad";
      p.setAttribute("data-status", "offline");
    }
  }

  function tick() {
    fetch(src, { credentials: "same-origin", cache: "no-store", redirect: "manual",
                 headers: { "Accept": "application/json" } })
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (!response.ok || type.indexOf("application/json") !== 0) { throw new Error("not JSON"); }
        return response.json();
      })
      .then(function (data) {
        drawStatus(data.ami || {});
        drawCalls(data);
        drawChains(data.chains);
      })
      .catch(offline)
      .then(function () { timer = document.hidden ? null : window.setTimeout(tick, every); });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { window.clearTimeout(timer); timer = null; }
    else if (timer === null) { tick(); }
  });
  timer = window.setTimeout(tick, every);
}());
