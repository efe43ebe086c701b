// Annotator page: fetch the next task, answer with keys 1 / 2 / s. The token never leaves this tab
// except in the Authorization header of same-origin API calls.
"use strict";

const state = { token: "", annotator: "annotator", task: null, busy: false, answers: 0 };
const $ = (id) => document.getElementById(id);

function showText(value) {
  if (typeof value === "string") return value;
  return value.map((m) => `${m.role}: ${m.content}`).join("\n");
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { "Authorization": `Bearer ${state.token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${data.detail || response.statusText}`);
  return data;
}

function render(data) {
  $("progress").textContent = `${data.progress.done} / ${data.progress.total} labelled`;
  state.task = data.task;
  $("task").hidden = !data.task;
  $("empty").hidden = !!data.task;
  if (!data.task) return;
  $("prompt").textContent = showText(data.task.prompt);
  $("response-1").textContent = data.task.response_1;
  $("response-2").textContent = data.task.response_2;
  document.body.dataset.taskId = String(data.task.task_id);
}

async function loadNext() {
  try {
    render(await api("GET", "/v1/tasks/next"));
    $("status").textContent = "";
  } catch (error) {
    $("status").textContent = String(error.message);
  }
}

async function answer(choice) {
  if (!state.task || state.busy) return;
  state.busy = true;
  try {
    await api("POST", `/v1/tasks/${state.task.task_id}/answer`, { choice, annotator: state.annotator });
    await loadNext();
    state.answers += 1;
    document.body.dataset.answers = String(state.answers);  // answers sent and followed by a reload
  } catch (error) {
    $("status").textContent = String(error.message);
  } finally {
    state.busy = false;
  }
}

function start() {
  sessionStorage.setItem("activealign-token", state.token);
  sessionStorage.setItem("activealign-annotator", state.annotator);
  $("login").hidden = true;
  loadNext();
  setInterval(() => { if (!state.task) loadNext(); }, 3000);
}

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement) return;
  const choice = { "1": 1, "2": 2, "s": "skip" }[event.key];
  if (choice !== undefined) answer(choice);
});

document.querySelectorAll("button[data-choice]").forEach((button) => {
  button.addEventListener("click", () => {
    const raw = button.dataset.choice;
    answer(raw === "skip" ? "skip" : Number(raw));
  });
});

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value;
  state.annotator = $("annotator").value;
  start();
});

// A token may arrive in the URL fragment (#token=...&annotator=...), which is never sent to the server.
const fragment = new URLSearchParams(location.hash.slice(1));
state.token = fragment.get("token") || sessionStorage.getItem("activealign-token") || "";
state.annotator = fragment.get("annotator") || sessionStorage.getItem("activealign-annotator") || "annotator";
if (fragment.has("token")) history.replaceState(null, "", location.pathname);
if (state.token) start(); else $("login").hidden = false;
