// Annotator page: fetch the next task, answer with keys 1 / 2 / s. The token (the annotator's own: answers are
// attributed to its holder) never leaves this tab except in the Authorization header of same-origin API calls.
"use strict";

const state = { token: "", task: null, shownAt: 0, busy: false, answers: 0 };
const $ = (id) => document.getElementById(id);

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
  // Markdown rendered by the service with raw HTML, images and links off (system/labels/render.py), under this
  // page's Content-Security-Policy: no script can run from it.
  $("prompt").innerHTML = data.task.prompt_html;
  $("response-1").innerHTML = data.task.response_1_html;
  $("response-2").innerHTML = data.task.response_2_html;
  document.body.dataset.taskId = String(data.task.task_id);
  state.shownAt = performance.now();
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
    const answerMs = Math.round(performance.now() - state.shownAt);
    await api("POST", `/v1/tasks/${state.task.task_id}/answer`, { choice, answer_ms: answerMs });
    await loadNext();
    state.answers += 1;
    document.body.dataset.answers = String(state.answers);  // answers sent and followed by a reload
  } catch (error) {
    $("status").textContent = String(error.message);
  } finally {
    state.busy = false;
  }
}

async function start() {
  $("login").hidden = true;
  try {
    const me = await api("GET", "/v1/whoami");
    if (me.role === "admin") throw new Error("this is the run token: sign in with your own annotator token");
    $("whoami").textContent = `answering as ${me.name}`;
  } catch (error) {
    sessionStorage.removeItem("activealign-token");
    $("status").textContent = String(error.message);
    $("login").hidden = false;
    return;
  }
  sessionStorage.setItem("activealign-token", state.token);
  const guidelines = await api("GET", "/v1/guidelines");
  $("guidelines-text").innerHTML = guidelines.html;
  $("guidelines").hidden = !guidelines.html;
  loadNext();
  setInterval(() => { if (!state.task) loadNext(); }, 3000);
}

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement) return;
  if (event.key === "?") { $("guidelines").open = !$("guidelines").open; return; }
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
  start();
});

// A token may arrive in the URL fragment (#token=...), which is never sent to the server.
const fragment = new URLSearchParams(location.hash.slice(1));
state.token = fragment.get("token") || sessionStorage.getItem("activealign-token") || "";
if (fragment.has("token")) history.replaceState(null, "", location.pathname);
if (state.token) start(); else $("login").hidden = false;
