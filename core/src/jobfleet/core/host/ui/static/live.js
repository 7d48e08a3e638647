// jobfleet ui: pages of runs still going fetch themselves again every few seconds and swap in
// the parts marked data-live-region (by id), without a reload. When the new page says it is no
// longer live (the run ended), the swap is done one last time and polling stops.
// Plain script, shipped in the package: no framework, no network beyond this server.
(function () {
  "use strict";
  const body = document.body;
  if (body.dataset.live !== "1") return;
  const every = Number(body.dataset.poll) || 2000;
  const status = document.getElementById("live-status");
  let busy = false;

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const answer = await fetch(window.location.href, {
        headers: { "X-Jobfleet-Live": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
      for (const region of document.querySelectorAll("[data-live-region]")) {
        const replacement = fresh.getElementById(region.id);
        if (replacement) region.replaceWith(document.importNode(replacement, true));
      }
      if (fresh.body.dataset.live !== "1") {
        body.dataset.live = "0";
        if (status) { status.textContent = "ended"; status.classList.add("ended"); }
        return;
      }
      if (status) status.textContent = "live · " + new Date().toLocaleTimeString();
    } catch (error) {
      if (status) status.textContent = "live (retrying: " + error.message + ")";
    } finally {
      busy = false;
    }
    window.setTimeout(refresh, every);
  }
  window.setTimeout(refresh, every);
})();
