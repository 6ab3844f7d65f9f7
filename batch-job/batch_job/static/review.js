// Progressive enhancement of the review queue: every form also works without this file.
// Decisions are posted in the background; a decided card leaves the grid (no gaps) and its note, with
// an undo button, goes to the list below. Keys: 1/2/3 confirm a guess, x unusable, / search all classes,
// o the whole photo, u undo the last decision, j/k move, n load the items still waiting.
"use strict";

const WAITING_EVERY_MS = 15000;

function openCards() {
  return Array.from(document.querySelectorAll(".card:not([data-done]):not([data-pending])"));
}

function current() {
  return document.querySelector(".card.current:not([data-done]):not([data-pending])") || openCards()[0] || null;
}

function select(card) {
  document.querySelectorAll(".card.current").forEach((c) => c.classList.remove("current"));
  if (card) {
    card.classList.add("current");
    card.scrollIntoView({ block: "nearest" });
  }
  const done = document.getElementById("page-done");
  if (done) {
    // After the last card of the page: say so, and how to go on (n).
    const busy = document.querySelector(".card[data-pending]") || document.getElementById("empty");
    done.hidden = Boolean(card || busy);
  }
}

async function refreshWaiting() {
  const total = document.getElementById("total");
  if (!total) {
    return;
  }
  const response = await fetch(`/waiting?${total.dataset.query}`, { headers: { "X-Review-Fetch": "1" } });
  if (response.ok && !response.redirected) {
    total.textContent = `${parseInt(await response.text(), 10)} waiting`;
  }
}

function fragmentOf(text) {
  return new DOMParser().parseFromString(text, "text/html").body.firstElementChild;
}

function refusal(why) {
  const note = document.createElement("div");
  note.className = "refused";
  note.setAttribute("role", "alert");
  note.dataset.refused = "1";
  note.textContent = why;
  return note;
}

// The answer's fragment; a refusal saying why where there is none (a plain-text 403 or 500, no network).
async function post(form, body) {
  try {
    const response = await fetch(form.action, { method: "POST", body, headers: { "X-Review-Fetch": "1" } });
    if (response.redirected) {
      window.location.assign(response.url); // the session ended: to the login page
      return null;
    }
    const text = await response.text();
    const fragment = fragmentOf(text) || refusal(`The server answered ${response.status}: ${text.trim()}`);
    return { response, fragment };
  } catch (error) {
    return { response: null, fragment: refusal(`Not sent (${error.message}): try again.`) };
  }
}

async function decide(form, submitter) {
  const card = form.closest(".card");
  const body = new FormData(form, submitter); // before disabling: a disabled submitter sends no value
  // The card is taken at once and the next one is current: a second quick key goes to the next card.
  card.dataset.pending = "1";
  card.querySelectorAll("button").forEach((b) => (b.disabled = true));
  // Its note's place is kept in key order, whichever answer comes first: u undoes the last key's decision.
  const place = document.createElement("p");
  place.className = "placeholder";
  document.getElementById("done").prepend(place);
  if (card.classList.contains("current")) {
    select(openCards().find((c) => card.compareDocumentPosition(c) & Node.DOCUMENT_POSITION_FOLLOWING) || openCards()[0] || null);
  }
  const answer = await post(form, body);
  if (!answer) {
    place.remove();
    return;
  }
  const { fragment } = answer;
  if (fragment.dataset.refused) {
    place.remove();
    // Not stored (a typo, an error, no network): the card stays, with why (and what was meant).
    delete card.dataset.pending;
    card.querySelectorAll("button").forEach((b) => (b.disabled = false));
    card.querySelectorAll(".refused").forEach((old) => old.remove());
    card.querySelector(".about").appendChild(fragment);
    select(card);
    return;
  }
  card.remove();
  place.replaceWith(fragment);
  select(current());
  refreshWaiting();
}

async function undo(form) {
  const note = form.closest(".decided");
  const body = new FormData(form);
  note.querySelectorAll("button").forEach((b) => (b.disabled = true));
  const answer = await post(form, body);
  if (!answer) {
    return;
  }
  if (answer.response?.ok) {
    note.remove();
    document.getElementById("queue").prepend(answer.fragment); // the card again, to decide anew
    select(answer.fragment);
  } else {
    note.replaceWith(answer.fragment);
  }
  refreshWaiting();
}

function showWhole(card) {
  const dialog = document.getElementById("whole");
  const link = card.querySelector("a.whole");
  if (!dialog || !link) {
    return;
  }
  dialog.querySelector("img").src = link.href;
  dialog.showModal();
}

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.classList.contains("undo")) {
    event.preventDefault();
    undo(form);
  } else if (form.closest(".card")) {
    event.preventDefault();
    decide(form, event.submitter);
  }
});

document.addEventListener("click", (event) => {
  const link = event.target.closest && event.target.closest("a.whole");
  if (link) {
    event.preventDefault();
    showWhole(link.closest(".card"));
  }
});

document.addEventListener("keydown", (event) => {
  const typing = event.target.closest && event.target.closest("input, select, textarea");
  if (typing) {
    if (event.key === "Escape") {
      event.target.blur();
    }
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey || document.querySelector("dialog[open]")) {
    return;
  }
  if (event.key === "n") {
    const more = document.getElementById("more");
    if (more) {
      event.preventDefault();
      window.location.assign(more.href);
    }
    return;
  }
  if (event.key === "u") {
    const last = document.querySelector("#done form.undo button:not([disabled])");
    if (last) {
      event.preventDefault();
      last.click();
    }
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
  } else if (event.key === "o") {
    event.preventDefault();
    showWhole(card);
  } else if (event.key === "/") {
    event.preventDefault();
    card.querySelector(".search").focus();
  } else if (event.key === "j" || event.key === "k") {
    const cards = openCards();
    const at = cards.indexOf(card) + (event.key === "j" ? 1 : -1);
    select(cards[Math.min(cards.length - 1, Math.max(0, at))]);
  }
});

document.addEventListener("DOMContentLoaded", () => {
  if (document.getElementById("queue")) {
    select(current());
    setInterval(refreshWaiting, WAITING_EVERY_MS); // other reviewers' decisions too
  }
});
