// Annotator page: fetch the next task and answer it with keys (1 / 2 / t / b / s, u = undo, ? = help); reviewers
// switch (v) to the pairs whose answers disagree and decide them. The token (the person's own: answers are
// attributed to its holder) is kept by session.js and leaves this tab only in the Authorization header of
// same-origin API calls.
"use strict";

const state = { role: "", mode: "annotate", task: null, shownAt: 0, busy: false, answers: 0, done: [] };
const $ = (id) => document.getElementById(id);

const api = session.api;

function clearExtras() {
  $("rationale").value = "";
  document.querySelectorAll("input[name=strength]").forEach((input) => { input.checked = false; });
}

function show(task, progress) {
  // Markdown rendered by the service with raw HTML, images and links off (system/labels/render.py), under this
  // page's Content-Security-Policy: no script can run from it.
  if (progress) {
    const review = progress.review ? ` · ${progress.review} for review` : "";
    $("progress").textContent = `${progress.done} / ${progress.total} labelled${review}`;
  }
  state.task = task;
  $("task").hidden = !task;
  $("empty").hidden = !!task;
  if (!task) return;
  $("prompt").innerHTML = task.prompt_html;
  $("response-1").innerHTML = task.response_1_html;
  $("response-2").innerHTML = task.response_2_html;
  document.body.dataset.taskId = String(task.task_id);
  clearExtras();
  state.shownAt = performance.now();
}

function showAnswers(answers) {
  const list = $("answers");
  list.replaceChildren(...answers.map((answer) => {
    const item = document.createElement("li");  // textContent: an annotator's rationale is never markup
    const strength = answer.strength ? ` (${answer.strength})` : "";
    const why = answer.rationale ? ` — ${answer.rationale}` : "";
    item.textContent = `${answer.annotator}: ${answer.choice}${strength}${why}`;
    return item;
  }));
}

async function loadNext() {
  try {
    if (state.mode === "review") {
      const data = await api("GET", "/v1/review/next");
      show(data.task, null);
      $("progress").textContent = `${data.waiting} waiting for review`;
      if (data.task) showAnswers(data.task.answers);
    } else {
      const data = await api("GET", "/v1/tasks/next");
      show(data.task, data.progress);
    }
    $("status").textContent = "";
  } catch (error) {
    $("status").textContent = String(error.message);
  }
}

function extras() {
  const picked = document.querySelector("input[name=strength]:checked");
  const rationale = $("rationale").value.trim();
  return { strength: picked ? picked.value : undefined, rationale: rationale || undefined };
}

async function act(work) {
  if (state.busy) return;
  state.busy = true;
  try {
    await work();
  } catch (error) {
    $("status").textContent = String(error.message);
  } finally {
    state.busy = false;
  }
}

function answer(choice) {
  if (!state.task) return;
  const task = state.task;
  act(async () => {
    const { strength, rationale } = extras();
    if (state.mode === "review") {
      await api("POST", `/v1/review/${task.task_id}/decision`, { choice, rationale });
    } else {
      const body = { choice, answer_ms: Math.round(performance.now() - state.shownAt) };
      if (choice !== "skip") Object.assign(body, { rationale, strength: choice === 1 || choice === 2 ? strength : undefined });
      await api("POST", `/v1/tasks/${task.task_id}/answer`, body);
      if (choice !== "skip") state.done.push(task.task_id);
    }
    await loadNext();
    state.answers += 1;
    document.body.dataset.answers = String(state.answers);  // answers sent and followed by a reload
  });
}

function undo() {
  if (state.mode !== "annotate" || !state.done.length) return;
  act(async () => {
    const taskId = state.done[state.done.length - 1];
    const data = await api("DELETE", `/v1/tasks/${taskId}/answer`);
    state.done.pop();
    show(data.task, data.progress);
    $("status").textContent = "Answer taken back: answer this pair again.";
    document.body.dataset.undone = String(taskId);
  });
}

function toggleReview() {
  if (state.role !== "reviewer") return;
  state.mode = state.mode === "review" ? "annotate" : "review";
  document.body.dataset.mode = state.mode;
  $("title").textContent = state.mode === "review" ? "Decide a disagreement (final)" : "Which response is better?";
  $("answers").hidden = state.mode !== "review";
  $("strength-box").hidden = state.mode === "review";
  $("skip").hidden = $("undo").hidden = state.mode === "review";
  loadNext();
}

async function start() {
  $("login").hidden = true;
  try {
    const me = await api("GET", "/v1/whoami");
    if (me.role === "admin") throw new Error("this is the run token: sign in with your own annotator token");
    state.role = me.role;
    $("whoami").textContent = `answering as ${me.name}`;
  } catch (error) {
    session.forget();
    $("status").textContent = String(error.message);
    $("login").hidden = false;
    return;
  }
  session.keep();
  $("review-toggle").hidden = state.role !== "reviewer";
  const guidelines = await api("GET", "/v1/guidelines");
  $("guidelines-text").innerHTML = guidelines.html;
  loadNext();
  setInterval(() => { if (!state.task) loadNext(); }, 3000);
}

const CHOICES = { "1": 1, "2": 2, "t": "tie", "b": "both_bad", "s": "skip" };

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLTextAreaElement) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (event.target instanceof HTMLInputElement && event.target.type !== "radio") return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "?") { $("help").open = !$("help").open; return; }
  if (event.key === "u") { undo(); return; }
  if (event.key === "v") { toggleReview(); return; }
  if (event.key === "r" && state.task) { event.preventDefault(); $("rationale").focus(); return; }
  const choice = CHOICES[event.key];
  if (choice !== undefined && !(choice === "skip" && state.mode === "review")) answer(choice);
});

document.querySelectorAll("button[data-choice]").forEach((button) => {
  button.addEventListener("click", () => {
    const raw = button.dataset.choice;
    answer(raw === "1" || raw === "2" ? Number(raw) : raw);
  });
});
$("undo").addEventListener("click", undo);
$("review-toggle").addEventListener("click", toggleReview);

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  session.token = $("token").value;
  start();
});

if (session.restore()) start(); else $("login").hidden = false;
