// Modal dialogs on the native <dialog> element: focus is trapped, Escape closes, focus returns on close.

import { h, uniqueId } from "./dom.js";

/** Open a modal dialog; returns {dialog, close}. `body` is a node or a list of nodes. */
export function openDialog({ title, body, className = "", onClose }) {
  const titleId = uniqueId("dialog-title");
  const opener = document.activeElement;
  const dialog = h(
    "dialog",
    { class: `dialog ${className}`.trim(), "aria-labelledby": titleId },
    h(
      "div",
      { class: "dialog-header" },
      h("h2", { id: titleId }, title),
      h("button", { type: "button", class: "button ghost icon", "aria-label": "Close", onclick: () => dialog.close() }, "×"),
    ),
    h("div", { class: "dialog-body" }, body),
  );
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (onClose) onClose(dialog.returnValue);
    if (opener && opener.isConnected) opener.focus();
  });
  // A click on the backdrop lands on the dialog element itself.
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close();
  });
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, close: (value) => dialog.close(value) };
}

/** Ask a yes/no question; resolves true when confirmed. */
export function confirmDialog({ title, message, confirmLabel, cancelLabel = "Cancel", danger = false }) {
  return new Promise((resolve) => {
    let confirmed = false;
    const confirmButton = h("button", { type: "button", class: `button ${danger ? "danger" : "primary"}` }, confirmLabel);
    const { close } = openDialog({
      title,
      body: [
        h("p", {}, message),
        h(
          "div",
          { class: "dialog-actions" },
          h("button", { type: "button", class: "button", onclick: () => close() }, cancelLabel),
          confirmButton,
        ),
      ],
      onClose: () => resolve(confirmed),
    });
    confirmButton.addEventListener("click", () => {
      confirmed = true;
      close();
    });
    confirmButton.focus();
  });
}
