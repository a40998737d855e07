// What the page shows, and the state it is drawn from. Everything a user or the
// server wrote reaches the page as text (el() and textContent); nothing is ever
// parsed as HTML.

import { ApiError, Unreachable } from "./client.js";

const NEAR_BOTTOM_PX = 80; // closer than this to the end, new messages keep the view at the end

export const $ = (id) => document.getElementById(id);

/** An element with attributes and children; strings become text nodes, never markup. */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) element.setAttribute(name, value);
  }
  element.append(...children.filter((child) => child !== null && child !== undefined));
  return element;
}

export const state = {
  me: null,
  poller: null,
  waiting: null, // the back-off pause of a load that waits for the server ("Retry now" ends it)
  conversations: new Map(), // id → conversation (members as users), newest activity first
  users: new Map(), // id → user, for names
  presence: new Map(), // user id → {online, last_seen}
  unread: new Map(), // conversation id → Set of message ids
  view: null, // the open conversation: {id, messages: Map(id → message), oldestSeq, hasOlder}
  pendingSend: null, // {conversationId, text, clientMsgId}: a retry reuses the id, so never a twin
};

// ---- messages for people ----

export function describe(error) {
  if (error instanceof Unreachable) return "Can't reach the Parley server. Check your connection and try again.";
  if (error instanceof ApiError) {
    const fields = error.code === "invalid_input" && error.details ? Object.values(error.details).flat() : [];
    return [error.message, ...fields].join(" ");
  }
  console.error(error);
  return "Something went wrong in this page; reloading it may help.";
}

export function announce(text) {
  const live = $("live");
  live.textContent = "";
  // A fresh text node is what screen readers notice, even for a repeated sentence.
  requestAnimationFrame(() => (live.textContent = text));
}

export function showConnection({ state: connection, retryInS, error }) {
  $("connection").hidden = connection === "live";
  $("retry-now").hidden = connection !== "unreachable";
  if (connection === "unreachable") {
    const reason = error instanceof ApiError ? `The server answered: ${error.message}` : "Can't reach the Parley server.";
    if (!(error instanceof ApiError || error instanceof Unreachable)) console.error(error);
    $("connection-text").textContent = `${reason} Retrying in ${Math.ceil(retryInS)} s…`;
  } else if (connection === "other-tab") {
    $("connection-text").textContent =
      "Parley is open in another tab of this browser, which receives new messages. Close it to receive them here.";
  }
}

// ---- names and presence ----

export function rememberUsers(users) {
  for (const user of users) state.users.set(user.id, user);
}

function nameOf(userId) {
  if (userId === state.me.id) return "You";
  return state.users.get(userId)?.display_name ?? `user ${userId}`;
}

/** "Ann (@ann)", or just "ann" when the display name is the username. */
function nameWithHandle(user) {
  return user.display_name === user.username ? user.username : `${user.display_name} (@${user.username})`;
}

function partnerOf(conversation) {
  return conversation.members.find((member) => member.id !== state.me.id);
}

function titleOf(conversation) {
  if (conversation.kind === "group") return conversation.title;
  return partnerOf(conversation)?.display_name ?? "Direct chat";
}

function presenceWords(userId) {
  const presence = state.presence.get(userId);
  if (presence?.online) return "online";
  if (presence?.last_seen) return `offline, last seen ${new Date(presence.last_seen).toLocaleString()}`;
  return "offline";
}

/** A dot that setPresence() keeps current; its words are read out, not its colour. */
function presenceDot(userId) {
  const dot = el("span", { class: "dot", "data-presence-of": userId, role: "img" });
  paintDot(dot, userId);
  return dot;
}

function paintDot(dot, userId) {
  const words = presenceWords(userId);
  dot.classList.toggle("online", state.presence.get(userId)?.online === true);
  dot.setAttribute("aria-label", words);
  dot.title = words;
}

export function setPresence(userId, presence) {
  state.presence.set(userId, { online: presence.online, last_seen: presence.last_seen });
  for (const dot of document.querySelectorAll(`[data-presence-of="${userId}"]`)) paintDot(dot, userId);
}

// ---- the conversation list ----

export function rememberConversation(conversation) {
  state.conversations.set(conversation.id, conversation);
  rememberUsers(conversation.members);
}

export function moveToTop(conversationId) {
  const conversation = state.conversations.get(conversationId);
  state.conversations.delete(conversationId);
  state.conversations = new Map([[conversationId, conversation], ...state.conversations]);
}

export function renderConversationList() {
  const items = [...state.conversations.values()].map((conversation) => {
    const partner = conversation.kind === "direct" ? partnerOf(conversation) : null;
    const unread = state.unread.get(conversation.id)?.size ?? 0;
    const button = el(
      "button",
      {
        type: "button",
        class: "conversation-link",
        "data-conversation-id": conversation.id,
        "aria-current": state.view?.id === conversation.id ? "true" : null,
      },
      partner ? presenceDot(partner.id) : el("span", { class: "group-mark", "aria-hidden": "true" }, "#"),
      el("span", { class: "title" }, titleOf(conversation)),
      unread ? el("span", { class: "unread", "aria-label": `${unread} unread` }, String(unread)) : null,
    );
    return el("li", {}, button);
  });
  const focused = document.activeElement?.dataset?.conversationId;
  $("conversations").replaceChildren(...items);
  $("no-conversations").hidden = items.length > 0;
  // A keyboard user keeps their place while messages reorder the list.
  if (focused) focusConversationLink(focused);
}

export function focusConversationLink(conversationId) {
  document.querySelector(`[data-conversation-id="${conversationId}"]`)?.focus();
}

// ---- the open conversation ----

export function renderConversationHead(conversation) {
  $("conversation-title").textContent = titleOf(conversation);
  const others = conversation.members.filter((member) => member.id !== state.me.id);
  $("members").replaceChildren(
    ...others.map((member) => el("li", {}, presenceDot(member.id), ` ${nameWithHandle(member)}`)),
  );
  $("add-members").hidden = conversation.kind !== "group";
}

/** Shows a conversation, empty until showMessages(); returns its view. */
export function showConversation(conversation) {
  const view = { id: conversation.id, messages: new Map(), oldestSeq: Infinity, hasOlder: false };
  state.view = view;
  state.unread.delete(conversation.id);
  history.replaceState(null, "", `#conversation-${conversation.id}`);
  document.body.classList.add("in-conversation");
  $("messages").replaceChildren();
  $("load-older").hidden = true;
  $("composer").hidden = false;
  $("composer-error").textContent = "";
  renderConversationHead(conversation);
  renderConversationList();
  return view;
}

export function closeConversation() {
  state.view = null;
  history.replaceState(null, "", location.pathname);
  document.body.classList.remove("in-conversation");
  $("conversation-title").textContent = "Pick a conversation";
  $("members").replaceChildren();
  $("messages").replaceChildren();
  $("add-members").hidden = true;
  $("composer").hidden = true;
  $("load-older").hidden = true;
  renderConversationList();
}

function messageItem(message) {
  const mine = message.sender_id === state.me.id;
  const sent = new Date(message.created_at);
  const clock = sent.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return el(
    "li",
    { class: mine ? "message mine" : "message", "data-seq": message.seq, "data-message-id": message.id },
    el(
      "p",
      { class: "meta" },
      el("span", { class: "sender" }, nameOf(message.sender_id)),
      " ",
      el("time", { datetime: message.created_at, title: sent.toLocaleString() }, clock),
    ),
    el("p", { class: "text" }, message.text),
  );
}

/** Adds messages to the view in conversation order; a message already shown is skipped. */
export function showMessages(view, messages) {
  const list = $("messages");
  for (const message of messages) {
    if (view.messages.has(message.id)) continue;
    view.messages.set(message.id, message);
    const later = [...list.children].find((item) => Number(item.dataset.seq) > message.seq);
    list.insertBefore(messageItem(message), later ?? null);
    view.oldestSeq = Math.min(view.oldestSeq, message.seq);
  }
}

/** Adds one page of older history above what is shown, keeping the reader's place. */
export function showOlderPage(view, page) {
  const scroller = $("scroller");
  const heightBefore = scroller.scrollHeight;
  showMessages(view, page.messages);
  showHasOlder(view, page.has_more);
  scroller.scrollTop += scroller.scrollHeight - heightBefore;
}

export function showHasOlder(view, hasOlder) {
  view.hasOlder = hasOlder;
  $("load-older").hidden = !hasOlder;
}

export function nearBottom() {
  const scroller = $("scroller");
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
}

export function scrollToBottom() {
  $("scroller").scrollTop = $("scroller").scrollHeight;
}

/** Where a new message from someone else is read out: "Ann in Book club: hi". */
export function announceMessage(message) {
  const conversation = state.conversations.get(message.conversation_id);
  const place = conversation.kind === "group" ? ` in ${conversation.title}` : "";
  announce(`${nameOf(message.sender_id)}${place}: ${message.text}`);
}

// ---- signed in or out ----

export function showSignIn(message = "") {
  for (const id of ["loading", "chat", "whoami", "log-out"]) $(id).hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("username").focus();
}

export function showChat() {
  for (const id of ["loading", "sign-in"]) $(id).hidden = true;
  for (const id of ["chat", "whoami", "log-out"]) $(id).hidden = false;
  $("whoami").textContent = `Signed in as ${nameWithHandle(state.me)}`;
}
