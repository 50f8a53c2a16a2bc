// Upload forms: preview the chosen image, refuse files over the server's limit before
// sending them, and disable the button while the upload is in flight.
"use strict";

document.querySelectorAll("form.upload-form").forEach((form) => {
  const input = form.querySelector('input[type="file"]');
  const preview = form.querySelector("img.preview");
  const problem = form.querySelector(".client-error");
  const button = form.querySelector('button[type="submit"]');
  const maxBytes = Number(form.dataset.maxBytes || 0);
  let previewUrl = null;

  const showProblem = (text) => {
    problem.textContent = text;
    problem.hidden = !text;
  };

  input.addEventListener("change", () => {
    showProblem("");
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    preview.hidden = true;
    const file = input.files[0];
    if (!file) return;
    if (maxBytes && file.size > maxBytes) {
      showProblem(`This file is ${file.size.toLocaleString()} bytes; the limit is ${maxBytes.toLocaleString()}.`);
      return;
    }
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.hidden = false;
  });

  // Coming back with the browser's Back button restores the page as it was left.
  window.addEventListener("pageshow", () => {
    button.disabled = false;
    button.textContent = "Upload";
  });

  form.addEventListener("submit", (event) => {
    const file = input.files[0];
    if (file && maxBytes && file.size > maxBytes) {
      event.preventDefault();
      return;
    }
    button.disabled = true;
    button.textContent = "Uploading…";
  });
});
