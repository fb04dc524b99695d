// RadGate feedback form (cases and served predictions): agree, or disagree with a corrected label.
(function () {
  "use strict";
  const form = document.getElementById("feedback");
  if (!form) return;
  const result = document.getElementById("fb-result");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = new FormData(form);
    body.set("agree", e.submitter ? e.submitter.value : "true");
    const res = await fetch(form.dataset.url, { method: "POST", body, credentials: "same-origin" });
    const json = await res.json().catch(() => ({}));
    result.textContent = res.ok ? "Feedback recorded." : "Not recorded: " + (json.detail || res.status);
  });
})();
