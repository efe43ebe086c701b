// Agreement page: GET /v1/annotation/stats (a reviewer's token or the run token) shown as two tables — by round
// (α, Fleiss' κ, mean Cohen's κ; the pairs' labels by outcome, adjudicated ones) and by annotator (agreement and κ
// with the others' majority, overall and per round; gold accuracy). Every value is set as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

function number(value, digits = 3) {
  return value === null || value === undefined ? "—" : value.toFixed(digits);
}

function row(cells, className) {
  const tr = document.createElement("tr");
  if (className) tr.className = className;
  for (const [text, cellClass] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cellClass) td.className = cellClass;
    tr.append(td);
  }
  return tr;
}

function outcomes(stats) {
  const count = (choice) => String(stats.outcomes[choice] || 0);
  return `${count("1")} / ${count("2")} / ${count("tie")} / ${count("both_bad")}`;
}

function agreementCells(stats) {
  return [[String(stats.pairs)], [String(stats.answers)], [number(stats.krippendorff_alpha), "alpha"],
          [number(stats.fleiss_kappa), "fleiss"], [number(stats.mean_cohen_kappa), "cohen"],
          [outcomes(stats), "outcomes"], [String(stats.adjudicated), "adjudicated"]];
}

function gold(person) {
  return person.gold_answers ? `${number(person.gold_accuracy, 2)} of ${person.gold_answers}` : "—";
}

function render(stats) {
  const rounds = $("rounds").tBodies[0];
  rounds.replaceChildren(...stats.rounds.map((r) => {
    const tr = row([[String(r.round)], ...agreementCells(r)]);
    tr.dataset.round = String(r.round);
    return tr;
  }), row([["all rounds"], ...agreementCells(stats)], "overall"));
  const head = $("annotators").tHead.rows[0];
  head.querySelectorAll("th.kappa-round").forEach((th) => th.remove());
  for (const r of stats.rounds) {
    const th = document.createElement("th");
    th.className = "kappa-round";
    th.textContent = `κ, round ${r.round}`;
    head.append(th);
  }
  const perRound = stats.rounds.map((r) => new Map(r.annotators.map((a) => [a.name, a])));
  $("annotators").tBodies[0].replaceChildren(...stats.annotators.map((a) => {
    const tr = row([
      [a.name], [String(a.answers)], [number(a.agreement_with_others)], [number(a.kappa_with_others), "kappa"],
      [a.median_answer_ms === null ? "—" : `${(a.median_answer_ms / 1000).toFixed(1)} s`], [gold(a), "gold"],
      ...perRound.map((people) => [number(people.get(a.name)?.kappa_with_others), "kappa-round"]),
    ]);
    tr.dataset.annotator = a.name;
    return tr;
  }));
  $("stats").hidden = false;
}

async function show() {
  render(await session.api("GET", "/v1/annotation/stats"));
  $("status").textContent = "";
  document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
}

async function start() {
  $("login").hidden = true;
  try {
    const me = await session.api("GET", "/v1/whoami");
    $("whoami").textContent = me.role === "admin" ? "signed in with the run token" : `signed in as ${me.name}`;
    await show();  // an annotator's token gets the service's 403 here
  } catch (error) {
    session.forget();
    $("whoami").textContent = "";
    $("stats").hidden = true;
    $("status").textContent = String(error.message);
    $("login").hidden = false;
    return;
  }
  session.keep();
}

async function refresh() {
  try {
    await show();
  } catch (error) {
    $("status").textContent = String(error.message);
  }
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  session.token = $("token").value;
  start();
});
$("refresh").addEventListener("click", refresh);

if (session.restore()) start(); else $("login").hidden = false;
