// EventFlow console: the little the pages need beyond HTML. Served by EventFlow
// itself (no CDN), loaded with `defer`, no inline code (the CSP forbids it).
"use strict";

// Elements with data-refresh="URL" data-every="SECONDS" are re-fetched and
// replaced in place (the overview's live part, a bulk action's progress).
// A job stops being polled once its state is no longer "running".
function startRefreshing(element) {
  const url = element.dataset.refresh;
  const every = Math.max(1, Number(element.dataset.every || "5")) * 1000;
  let timer = null;
  async function tick() {
    if (document.hidden) {
      timer = setTimeout(tick, every);
      return;
    }
    try {
      const response = await fetch(url, {
        credentials: "same-origin",
        headers: { "x-console-fragment": "1" },
      });
      if (response.redirected) {
        window.location.reload(); // the session ended: show the login page
        return;
      }
      if (response.ok) {
        element.innerHTML = await response.text();
        const state = element.querySelector("[data-state]");
        if (state && state.dataset.state !== "running") {
          return;
        }
      }
    } catch (error) {
      // The API restarting or the network dropping: try again later.
    }
    timer = setTimeout(tick, every);
  }
  timer = setTimeout(tick, every);
  return () => clearTimeout(timer);
}

function wireBulkForm(form) {
  const scope = form.querySelector("#scope");
  for (const button of form.querySelectorAll("button[data-scope]")) {
    button.addEventListener("click", () => {
      if (scope) {
        scope.value = button.dataset.scope;
      }
    });
  }
  const all = form.querySelector("#select-all");
  if (all) {
    all.addEventListener("change", () => {
      for (const box of form.querySelectorAll("input[name=id]")) {
        box.checked = all.checked;
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const element of document.querySelectorAll("[data-refresh]")) {
    startRefreshing(element);
  }
  const bulk = document.getElementById("bulk");
  if (bulk) {
    wireBulkForm(bulk);
  }
});
