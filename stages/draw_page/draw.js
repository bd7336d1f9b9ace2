"use strict";
// Draws white on black, as MNIST's digits are, and asks the server what the model reads.

const pad = document.getElementById("pad");
const pen = pad.getContext("2d");
const seen = document.getElementById("seen").getContext("2d");
const digitOut = document.getElementById("digit");
const statusOut = document.getElementById("status");
const bars = document.getElementById("bars");
const THROTTLE_MS = 80; // at most one prediction per 80 ms while drawing

let last = null;       // the previous point of the stroke being drawn
let dirty = false;     // drawn since the last request was sent
let busy = false;      // a request is on its way: one at a time, so answers come in order
let timer = null;
let generation = 0;    // bumped by Clear, so a late answer about an erased drawing is dropped

for (let digit = 0; digit < 10; digit++) {
  bars.insertAdjacentHTML("beforeend",
    `<li data-digit="${digit}"><span>${digit}</span><span class="track"><span class="fill"></span></span><span class="percent"></span></li>`);
}

function clearPad() {
  generation++;
  dirty = false;
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, pad.width, pad.height);
  show(null);
  setStatus("Draw one digit, large, in the middle.");
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

function strokeTo([x, y]) {
  pen.beginPath();
  pen.moveTo(...(last ?? [x, y]));
  pen.lineTo(x, y);
  pen.stroke();
  last = [x, y];
}

pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  pen.strokeStyle = "#fff";
  pen.lineWidth = 20;
  pen.lineCap = pen.lineJoin = "round";
  last = null;
  strokeTo(point(event));
  changed();
});

pad.addEventListener("pointermove", (event) => {
  if (last === null) return;
  for (const each of event.getCoalescedEvents?.() ?? [event]) strokeTo(point(each));
  changed();
});

for (const end of ["pointerup", "pointercancel"]) {
  pad.addEventListener(end, () => { last = null; changed(); });
}

function changed() {
  dirty = true;
  if (timer === null && !busy) timer = setTimeout(send, THROTTLE_MS);
}

async function send() {
  timer = null;
  if (!dirty) return;
  dirty = false;
  busy = true;
  const asked = generation;
  try {
    const response = await fetch("api/predict", { method: "POST", headers: { "Content-Type": "image/png" }, body: png() });
    const answer = await response.json();
    if (asked !== generation) return;
    if (response.ok) {
      show(answer);
      setStatus("");
    } else {
      show(null);
      setStatus(answer.error, response.status !== 422);
    }
  } catch (error) {
    setStatus(`no answer from the server: ${error.message}`, true);
  } finally {
    busy = false;
    if (dirty) changed();
  }
}

// toDataURL, not toBlob: Chromium may hold toBlob's encoding back for an idle moment, up to a second.
function png() {
  return Uint8Array.from(atob(pad.toDataURL("image/png").split(",")[1]), (char) => char.charCodeAt(0));
}

function show(answer) {
  digitOut.textContent = answer ? answer.digit : "?";
  for (const row of bars.children) {
    const p = answer ? answer.probabilities[row.dataset.digit] : 0;
    row.classList.toggle("top", answer !== null && Number(row.dataset.digit) === answer.digit);
    row.querySelector(".fill").style.width = `${p * 100}%`;
    row.querySelector(".percent").textContent = answer ? `${(p * 100).toFixed(1)}%` : "";
  }
  const image = seen.createImageData(28, 28);
  answer?.image.flat().forEach((value, index) => image.data.set([value, value, value, 255], index * 4));
  seen.putImageData(image, 0, 0);
}

function setStatus(text, isError = false) {
  statusOut.textContent = text;
  statusOut.classList.toggle("error", isError);
}

async function describeModel() {
  const rows = document.querySelector("#model tbody");
  try {
    const info = await (await fetch("api/model")).json();
    for (const [key, value] of Object.entries(info)) {
      const row = rows.insertRow();
      const name = row.appendChild(document.createElement("th"));
      name.scope = "row";
      name.textContent = key.replaceAll("_", " ");
      row.insertCell().textContent = value;
    }
  } catch (error) {
    setStatus(`could not ask the server which model is loaded: ${error.message}`, true);
  }
}

document.getElementById("clear").addEventListener("click", clearPad);
clearPad();
describeModel();
