// The caller's upload page: say how many photos were picked, and stop a second tap while sending.
// No inline script: the console's CSP allows scripts from this site only.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) { return; }
  var input = document.getElementById("photos");
  var picked = document.getElementById("picked");
  var send = document.getElementById("send");
  input.addEventListener("change", function () {
    var n = input.files ? input.files.length : 0;
    picked.textContent = n ? ("已选择 " + n + " 张 / " + n + " selected") : "";
  });
  form.addEventListener("submit", function () {
    send.disabled = true;
    send.textContent = send.getAttribute("data-busy");
  });
}());
