// Live updates of the deliveries page (SPEC 8).
//
// The page works without this file: it is what a reload would show. With it, the page
// opens one Server-Sent Events stream (the URL is in #results' data-live) and, on each
// `update` event, puts in the counts and the results the server rendered, as a reload
// would render them (autoescaped HTML from the console itself). The browser reconnects
// by itself when the stream ends; a refusal (503) stops it, and the page says so.
(function () {
  "use strict";
  var results = document.getElementById("results");
  var counts = document.getElementById("counts-live");
  var status = document.getElementById("live-status");
  if (!results || !counts || !status || !results.dataset.live || !window.EventSource) {
    return;
  }

  function say(text) {
    status.textContent = text;
  }

  // A link the keyboard is on keeps the focus when the region around it is replaced.
  function focusedHref() {
    var focused = document.activeElement;
    if (!focused || !(results.contains(focused) || counts.contains(focused))) {
      return null;
    }
    return focused.getAttribute("href");
  }

  function refocus(href) {
    var links = document.querySelectorAll("#results a, #counts-live a");
    for (var i = 0; i < links.length; i++) {
      if (links[i].getAttribute("href") === href) {
        links[i].focus();
        return;
      }
    }
  }

  var source = new EventSource(results.dataset.live);
  source.addEventListener("open", function () {
    say("Live: new deliveries and status changes show here as they happen.");
  });
  source.addEventListener("update", function (event) {
    var update = JSON.parse(event.data);
    var href = focusedHref();
    counts.innerHTML = update.counts;
    results.innerHTML = update.results;
    if (href !== null) {
      refocus(href);
    }
    say("Live: updated at " + new Date().toLocaleTimeString() + ".");
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      say("Live updates stopped: reload the page to see what changed.");
    } else {
      say("Live updates interrupted: reconnecting…");
    }
  });
})();
