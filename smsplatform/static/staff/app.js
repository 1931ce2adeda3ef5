// The staff app's few behaviours that are not htmx. A fragment swapped in with data-insert-text (a created
// short link's {{link}}) puts that text into the field data-insert-target names, at the cursor, once; then
// the field's input event lets the live counter recount.
"use strict";
document.addEventListener("htmx:afterSettle", function (event) {
  var root = event.detail && event.detail.target;
  if (!root || !root.querySelectorAll) { return; }
  var marks = root.querySelectorAll("[data-insert-text]");
  for (var i = 0; i < marks.length; i++) {
    var mark = marks[i];
    var text = mark.getAttribute("data-insert-text");
    var target = document.getElementById(mark.getAttribute("data-insert-target") || "id_text");
    mark.removeAttribute("data-insert-text");
    if (!target || !text || target.value.indexOf(text) !== -1) { continue; }
    var start = typeof target.selectionStart === "number" ? target.selectionStart : target.value.length;
    var end = typeof target.selectionEnd === "number" ? target.selectionEnd : start;
    var before = target.value.slice(0, start);
    var spacer = before && !/\s$/.test(before) ? " " : "";
    target.value = before + spacer + text + target.value.slice(end);
    target.dispatchEvent(new Event("input", { bubbles: true }));
  }
});

// An upload's progress (the CSV import): htmx reports it; a <progress data-upload-progress> in the form shows it.
document.addEventListener("htmx:xhr:progress", function (event) {
  var form = event.target && event.target.closest ? event.target.closest("form") : null;
  var bar = form ? form.querySelector("[data-upload-progress]") : null;
  if (bar && event.detail && event.detail.lengthComputable) {
    bar.value = Math.round((100 * event.detail.loaded) / event.detail.total);
    bar.textContent = bar.value + "%";
  }
});
