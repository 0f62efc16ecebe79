// Live updates of a console page: the deliveries (SPEC 8), a conversation (SPEC 8.1).
//
// A page works without this file: it is what a reload would show. With it, the page
// opens one Server-Sent Events stream (the URL is in the data-live attribute of one of its
// elements) and, on each `update` event, puts in every element with a data-region the
// part of the event named by it, as the server rendered it for a reload (autoescaped HTML
// from the console itself). The browser reconnects by itself when the stream ends; a
// refusal (503) stops it, and the page says so.
(function () {
  "use strict";
  var live = document.querySelector("[data-live]");
  var regions = document.querySelectorAll("[data-region]");
  var status = document.getElementById("live-status");
  if (!live || !regions.length || !status || !live.dataset.live || !window.EventSource) {
    return;
  }

  function say(text) {
    status.textContent = text;
  }

  function inRegion(element) {
    for (var i = 0; i < regions.length; i++) {
      if (regions[i].contains(element)) {
        return true;
      }
    }
    return false;
  }

  // A link the keyboard is on keeps the focus when the region around it is replaced.
  function focusedHref() {
    var focused = document.activeElement;
    if (!focused || !inRegion(focused)) {
      return null;
    }
    return focused.getAttribute("href");
  }

  function refocus(href) {
    for (var i = 0; i < regions.length; i++) {
      var links = regions[i].querySelectorAll("a");
      for (var j = 0; j < links.length; j++) {
        if (links[j].getAttribute("href") === href) {
          links[j].focus();
          return;
        }
      }
    }
  }

  var source = new EventSource(live.dataset.live);
  source.addEventListener("open", function () {
    say(live.dataset.liveSays || "Live: changes show here as they happen.");
  });
  source.addEventListener("update", function (event) {
    var update = JSON.parse(event.data);
    var href = focusedHref();
    for (var i = 0; i < regions.length; i++) {
      var part = update[regions[i].dataset.region];
      if (typeof part === "string") {
        regions[i].innerHTML = part;
      }
    }
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
