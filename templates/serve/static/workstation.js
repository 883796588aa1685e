// The review workstation's only script: keyboard steps through the current sort, and
// explanations fetched on demand. Every page works without it except the explanation.
"use strict";

(function () {
  const steps = document.querySelector("nav.steps");
  if (steps) {
    document.addEventListener("keydown", function (event) {
      const t = event.target;
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
      let go = "";
      if (event.key === "j" || event.key === "ArrowRight") go = steps.dataset.next;
      else if (event.key === "k" || event.key === "ArrowLeft") go = steps.dataset.prev;
      else if (event.key === "u") go = steps.dataset.up;
      if (go) {
        event.preventDefault();
        window.location.assign(go);
      }
    });
  }

  const form = document.getElementById("explain-form");
  if (!form) return;
  const status = document.getElementById("explain-status");
  const result = document.getElementById("explain-result");

  function text(tag, value, cls) {
    const el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const method = form.elements.method.value;
    const variant = form.elements.variant.value;
    const url = form.dataset.url + "?" + new URLSearchParams({ method: method, variant: variant });
    status.textContent = "computing " + method + " for " + variant + "…";
    form.elements[form.elements.length - 1].disabled = true;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      const data = await response.json();
      if (!response.ok) {
        status.textContent = data.error || ("failed: HTTP " + response.status);
        return;
      }
      const block = document.createElement("div");
      block.className = "explanation";
      block.dataset.method = data.method;
      block.dataset.variant = data.variant;
      block.appendChild(text("h3", data.method + " · " + data.variant));
      for (const m of data.maps) {
        const fig = document.createElement("figure");
        const img = document.createElement("img");
        img.src = m.src;
        img.alt = m.title + " for " + data.variant;
        fig.appendChild(img);
        fig.appendChild(text("figcaption", m.title + " (" + m.scale + " scale). " + m.params));
        block.appendChild(fig);
      }
      const side = document.createElement("div");
      side.className = "checks";
      if (data.checks.length) {
        side.appendChild(text("p", "Faithfulness on this image: a map that points at what the model uses has a lower " +
                                   "deletion AUC and a higher insertion AUC than the random reference."));
        const list = document.createElement("ul");
        for (const c of data.checks) {
          list.appendChild(text("li", c.check + " AUC, " + c.method + ": " + c.auc.toFixed(3)));
        }
        side.appendChild(list);
      }
      for (const n of data.notes) side.appendChild(text("p", n, "note"));
      block.appendChild(side);
      result.prepend(block);
      status.textContent = (data.cached ? "read from the explanation cache" : "computed") + " in " + data.seconds + " s";
    } catch (err) {
      status.textContent = "failed: " + err;
    } finally {
      form.elements[form.elements.length - 1].disabled = false;
    }
  });
})();
