// The page of `spacy-hybridner serve`: POST the text to /v1/render, show displaCy's markup
// and a table of the entities, and hide those below the confidence threshold.
"use strict";
(function () {
  const form = document.getElementById("form");
  const button = document.getElementById("annotate");
  const text = document.getElementById("text");
  const keyRow = document.getElementById("key-row");
  const keyInput = document.getElementById("api-key");
  const slider = document.getElementById("threshold");
  const sliderValue = document.getElementById("threshold-value");
  const shown = document.getElementById("shown");
  const errorBox = document.getElementById("error");
  const rendered = document.getElementById("rendered");
  const table = document.getElementById("ents");
  const tbody = table.querySelector("tbody");

  function headers() {
    const h = { "Content-Type": "application/json" };
    if (keyInput.value) h["X-API-Key"] = keyInput.value;
    return h;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  async function errorText(response) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail
        : body.detail.map((e) => e.loc.join(".") + ": " + e.msg).join("; ");
    } catch (e) { /* not JSON */ }
    if (response.status === 401) {
      keyRow.hidden = false;
      keyInput.focus();
    }
    return "Error " + response.status + ": " + detail;
  }

  function isBelow(confidence, threshold) {
    // Same rule as min_confidence: with a threshold, entities without a confidence go too.
    if (threshold <= 0) return false;
    return confidence === null || confidence < threshold;
  }

  function applyThreshold() {
    const threshold = parseFloat(slider.value);
    sliderValue.textContent = threshold.toFixed(2);
    let total = 0;
    let visible = 0;
    rendered.querySelectorAll("mark.entity").forEach((mark) => {
      const c = mark.dataset.confidence === "" ? null : parseFloat(mark.dataset.confidence);
      const below = isBelow(c, threshold);
      mark.classList.toggle("below", below);
      total += 1;
      if (!below) visible += 1;
    });
    tbody.querySelectorAll("tr").forEach((row) => {
      const c = row.dataset.confidence === "" ? null : parseFloat(row.dataset.confidence);
      row.classList.toggle("below", isBelow(c, threshold));
    });
    shown.textContent = total ? visible + " of " + total + " entities shown" : "";
  }

  function fillTable(docs) {
    tbody.replaceChildren();
    docs.forEach((doc, j) => {
      doc.ents.forEach((ent, i) => {
        const row = document.createElement("tr");
        row.dataset.doc = j;
        row.dataset.ent = i;
        row.dataset.confidence = ent.confidence === null ? "" : String(ent.confidence);
        const cells = [ent.text, ent.label, ent.confidence === null ? "–" : ent.confidence.toFixed(3),
          ent.start_char + "–" + ent.end_char];
        cells.forEach((value, k) => {
          const cell = document.createElement("td");
          cell.textContent = value;
          if (k >= 2) cell.className = "num";
          row.appendChild(cell);
        });
        tbody.appendChild(row);
      });
    });
    table.hidden = tbody.children.length === 0;
  }

  async function annotate(event) {
    event.preventDefault();
    showError("");
    button.disabled = true;
    try {
      const response = await fetch("/v1/render", {
        method: "POST", headers: headers(), body: JSON.stringify({ text: text.value }),
      });
      if (!response.ok) {
        showError(await errorText(response));
        return;
      }
      const result = await response.json();
      rendered.innerHTML = result.html; // displaCy's markup; it escapes the text
      fillTable(result.docs);
      applyThreshold();
      document.body.dataset.annotated = String(Number(document.body.dataset.annotated || 0) + 1);
      if (!document.getElementById("model-info").dataset.loaded) loadModelInfo();
    } catch (e) {
      showError("The server could not be reached: " + e);
    } finally {
      button.disabled = false;
    }
  }

  async function loadModelInfo() {
    const box = document.getElementById("model-info");
    try {
      const response = await fetch("/v1/model", { headers: headers() });
      if (!response.ok) {
        box.textContent = response.status === 401 ? "Enter the API key to use this server."
          : "Model: " + (await errorText(response));
        if (response.status === 401) keyRow.hidden = false;
        return;
      }
      const info = await response.json();
      box.textContent = info.name + " " + info.version + " (" + info.lang + "): " + info.pipeline.join(", ") +
        "; labels " + info.labels.join(", ");
      box.dataset.loaded = "1";
    } catch (e) {
      box.textContent = "The server could not be reached.";
    }
  }

  form.addEventListener("submit", annotate);
  slider.addEventListener("input", applyThreshold);
  loadModelInfo();
})();
