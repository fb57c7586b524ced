// Verify progress: poll the run's state and update the bar; reload when it is done.
// Without JavaScript the page says to reload; nothing else on the console needs a script.
(function () {
  "use strict";
  var box = document.getElementById("verify-progress");
  if (!box) { return; }
  var bar = document.getElementById("verify-bar");
  var stage = document.getElementById("verify-stage");
  function poll() {
    fetch(box.getAttribute("data-url"), { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.json();
      })
      .then(function (run) {
        bar.max = run.steps;
        bar.value = run.step;
        bar.textContent = run.step + " of " + run.steps;
        stage.textContent = "Step " + run.step + " of " + run.steps + ": " + run.label;
        if (run.finished) {
          window.location.href = "/console/integrity?done=" + encodeURIComponent(run.id) + "#verify";
        } else {
          window.setTimeout(poll, 700);
        }
      })
      .catch(function () {
        stage.textContent = "Lost contact with the server; reload the page to see the result.";
      });
  }
  window.setTimeout(poll, 500);
})();
