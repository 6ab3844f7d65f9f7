// Progressive enhancement of the review queue: every form also works without this file.
// Decisions are posted in the background and the decided card is replaced by the server's
// fragment; keys 1/2/3 confirm a guess, x marks unusable, / searches all classes, j/k move.
"use strict";

function openCards() {
  return Array.from(document.querySelectorAll(".card:not([data-done])"));
}

function current() {
  return document.querySelector(".card.current:not([data-done])") || openCards()[0] || null;
}

function select(card) {
  document.querySelectorAll(".card.current").forEach((c) => c.classList.remove("current"));
  if (card) {
    card.classList.add("current");
    card.scrollIntoView({ block: "nearest" });
  }
}

async function decide(form, submitter) {
  const card = form.closest(".card");
  const next = openCards().find((c) => c !== card && card.compareDocumentPosition(c) & Node.DOCUMENT_POSITION_FOLLOWING);
  const body = new FormData(form, submitter); // before disabling: a disabled submitter sends no value
  card.querySelectorAll("button").forEach((b) => (b.disabled = true)); // no double submit
  const response = await fetch(form.action, { method: "POST", body, headers: { "X-Review-Fetch": "1" } });
  if (response.redirected) {
    window.location.assign(response.url); // the session ended: to the login page
    return;
  }
  const fragment = new DOMParser().parseFromString(await response.text(), "text/html").body.firstElementChild;
  if (!fragment) {
    return;
  }
  card.replaceWith(fragment);
  const total = document.getElementById("total");
  if (total && response.ok) {
    total.textContent = `${Math.max(0, parseInt(total.textContent, 10) - 1)} waiting`;
  }
  select(next || openCards()[0] || null);
}

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.closest(".card")) {
    return;
  }
  event.preventDefault();
  decide(form, event.submitter);
});

document.addEventListener("keydown", (event) => {
  const typing = event.target.closest && event.target.closest("input, select, textarea");
  if (typing) {
    if (event.key === "Escape") {
      event.target.blur();
    }
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  const card = current();
  if (!card) {
    return;
  }
  if (["1", "2", "3"].includes(event.key)) {
    const guess = card.querySelector(`.guess[data-key="${event.key}"]`);
    if (guess) {
      event.preventDefault();
      guess.click();
    }
  } else if (event.key === "x") {
    event.preventDefault();
    card.querySelector(".reject").click();
  } else if (event.key === "/") {
    event.preventDefault();
    card.querySelector(".search").focus();
  } else if (event.key === "j" || event.key === "k") {
    const cards = openCards();
    const at = cards.indexOf(card) + (event.key === "j" ? 1 : -1);
    select(cards[Math.min(cards.length - 1, Math.max(0, at))]);
  }
});

document.addEventListener("DOMContentLoaded", () => select(current()));
