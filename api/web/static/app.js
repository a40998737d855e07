// What the page does: signing in, the forms, opening conversations, and what
// the inbox brings. client.js talks to the server; view.js draws the page.

import { ApiError, InboxPoller, api, backoffS, isTransient, pause, session } from "./client.js";
import {
  $,
  announceMessage,
  closeConversation,
  describe,
  focusConversationLink,
  moveToTop,
  nearBottom,
  rememberConversation,
  rememberUsers,
  renderConversationHead,
  renderConversationList,
  scrollToBottom,
  setPresence,
  showChat,
  showConnection,
  showConversation,
  showHasOlder,
  showMessages,
  showOlderPage,
  showSignIn,
  state,
} from "./view.js";

const SESSION_ENDED = "Your session has ended. Please log in again.";

/** Runs `load` until it succeeds or fails for good, showing the banner while the server is away. */
async function whenReachable(load) {
  for (let failures = 1; ; failures += 1) {
    try {
      const result = await load();
      showConnection({ state: "live" });
      return result;
    } catch (error) {
      if (!isTransient(error)) throw error;
      const retryInS = backoffS(failures, error.retryAfterS);
      showConnection({ state: "unreachable", retryInS, error });
      state.waiting = pause(retryInS);
      await state.waiting.done;
    }
  }
}

// ---- conversations ----

async function loadConversations() {
  state.conversations = new Map();
  (await api.conversations()).forEach(rememberConversation);
  const others = [...state.users.keys()].filter((id) => id !== state.me.id);
  for (const presence of others.length ? await api.presence(others) : []) setPresence(presence.user_id, presence);
  renderConversationList();
}

/** A conversation with its members' presence; null if I am not (or no longer) in it. */
async function fetchConversation(conversationId) {
  try {
    const detail = await api.conversation(conversationId);
    rememberConversation(detail);
    for (const member of detail.members) setPresence(member.id, member.presence);
    return detail;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

async function openConversation(conversationId, { focus = true } = {}) {
  const conversation = state.conversations.get(conversationId);
  if (!conversation) return closeConversation(); // I left it meanwhile
  const view = showConversation(conversation);
  if (focus) $("message-text").focus();
  try {
    const [detail, page] = await Promise.all([fetchConversation(conversationId), api.history(conversationId)]);
    if (state.view !== view) return; // another conversation was opened meanwhile
    if (detail) renderConversationHead(detail);
    showMessages(view, page.messages);
    showHasOlder(view, page.has_more);
    scrollToBottom();
  } catch (error) {
    $("composer-error").textContent = describe(error);
  }
}

async function loadOlder() {
  const view = state.view;
  try {
    const page = await api.history(view.id, view.oldestSeq);
    if (state.view === view) showOlderPage(view, page);
  } catch (error) {
    $("composer-error").textContent = describe(error);
  }
}

// ---- what the inbox brings ----

/** A message from the inbox (or just sent); `news` marks it unread and reads it out. */
async function receiveMessage(message, { news = false } = {}) {
  const known = state.conversations.has(message.conversation_id);
  if (!known && !(await fetchConversation(message.conversation_id))) return;
  moveToTop(message.conversation_id);
  const fromOther = message.sender_id !== state.me.id;
  if (state.view?.id === message.conversation_id) {
    const follow = nearBottom() || !fromOther;
    showMessages(state.view, [message]);
    if (follow) scrollToBottom();
  } else if (fromOther && news) {
    const unread = state.unread.get(message.conversation_id) ?? new Set();
    state.unread.set(message.conversation_id, unread.add(message.id));
  }
  if (fromOther && news) announceMessage(message);
  renderConversationList();
}

async function receiveMembership(entry) {
  const leftMe = entry.type === "member_left" && entry.user_ids.includes(state.me.id);
  if (leftMe) {
    state.conversations.delete(entry.conversation_id);
    if (state.view?.id === entry.conversation_id) closeConversation();
  } else {
    const known = state.conversations.has(entry.conversation_id);
    const detail = await fetchConversation(entry.conversation_id);
    if (detail && !known) moveToTop(detail.id);
    if (detail && state.view?.id === detail.id) renderConversationHead(detail);
  }
  renderConversationList();
}

/** What the inbox brings; a new device's `backlog` is shown but is not news. */
async function receiveEntries(entries, { backlog }) {
  for (const entry of entries) {
    if (entry.type === "message") await receiveMessage(entry.message, { news: !backlog });
    else if (entry.type === "member_joined" || entry.type === "member_left") await receiveMembership(entry);
    else if (entry.type === "presence") setPresence(entry.user_id, entry);
    // Other types are newer than this page: skipped, and the cursor moves past them.
  }
}

// ---- signing in and out ----

async function enterChat() {
  showChat();
  rememberUsers([state.me]);
  try {
    await whenReachable(loadConversations);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return leaveChat(SESSION_ENDED);
    $("sidebar-error").textContent = describe(error);
  }
  const fromLink = Number(location.hash.match(/^#conversation-(\d+)$/)?.[1]);
  if (state.conversations.has(fromLink)) await openConversation(fromLink, { focus: false });
  else $("direct-username").focus();
  state.poller = new InboxPoller({
    onEntries: receiveEntries,
    onConnection: showConnection,
    onPruned: async () => {
      await loadConversations();
      if (state.view) await openConversation(state.view.id, { focus: false });
    },
    onUnauthorized: () => leaveChat(SESSION_ENDED),
  });
  state.poller.run();
}

function leaveChat(message) {
  state.poller?.stop();
  session.end();
  Object.assign(state, { me: null, poller: null, view: null, pendingSend: null });
  for (const collection of [state.conversations, state.users, state.presence, state.unread]) collection.clear();
  closeConversation();
  showConnection({ state: "live" });
  showSignIn(message);
}

async function signIn(event) {
  event.preventDefault();
  const signingUp = event.submitter?.value === "sign-up";
  const username = $("username").value.trim();
  const password = $("password").value;
  const error = $("sign-in-error");
  error.textContent = "";
  if (!username || !password) {
    error.textContent = "Enter a username and a password.";
    return;
  }
  const buttons = event.target.querySelectorAll("button");
  buttons.forEach((button) => (button.disabled = true));
  try {
    if (signingUp) await api.signUp(username, password, $("display-name").value.trim());
    const { token, user } = await api.logIn(username, password);
    session.start(token);
    state.me = user;
    $("password").value = "";
    await enterChat();
  } catch (failure) {
    const wrong = failure instanceof ApiError && failure.status === 401;
    error.textContent = wrong ? "Wrong username or password." : describe(failure);
  } finally {
    buttons.forEach((button) => (button.disabled = false));
  }
}

async function logOut() {
  try {
    await api.logOut();
  } catch {
    // Logged out here all the same: the token is forgotten either way.
  }
  leaveChat("");
}

// ---- forms in the chat ----

/** A reason for people, shown as is (the other failures go through describe()). */
class Refusal extends Error {}

/** The users behind comma-separated usernames. */
async function usersNamed(text) {
  const usernames = text.split(",").map((name) => name.trim()).filter(Boolean);
  const users = await Promise.all(usernames.map((name) => api.findUser(name)));
  const missing = usernames.filter((_, index) => !users[index]);
  if (missing.length) throw new Refusal(`No user named ${missing.join(", ")}.`);
  return users;
}

/** Runs a form's action, showing its failure in `errorId`; the form is reset on success. */
function handleForm(formId, errorId, action) {
  const form = $(formId);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    if (button.disabled) return; // still busy with the last submit (Enter pressed twice)
    const error = $(errorId);
    error.textContent = "";
    button.disabled = true;
    try {
      await action();
      form.reset();
    } catch (failure) {
      error.textContent = failure instanceof Refusal ? failure.message : describe(failure);
    } finally {
      button.disabled = false;
    }
  });
}

async function startDirect() {
  const [partner] = await usersNamed($("direct-username").value);
  if (!partner) throw new Refusal("Enter the username of the person to chat with.");
  await addAndOpen(await api.openDirect(partner.id));
}

async function createGroup() {
  const members = await usersNamed($("group-members").value);
  const group = await api.createGroup($("group-title").value.trim(), members.map((user) => user.id));
  $("new-group").closest("details").open = false;
  await addAndOpen(group);
}

async function addAndOpen(conversation) {
  if (!state.conversations.has(conversation.id)) {
    rememberConversation(conversation);
    moveToTop(conversation.id);
  }
  await openConversation(conversation.id);
}

async function addMembers() {
  const members = await usersNamed($("add-usernames").value);
  await api.addMembers(state.view.id, members.map((user) => user.id));
  const detail = await fetchConversation(state.view.id); // with the newcomers' presence
  if (detail && state.view?.id === detail.id) renderConversationHead(detail);
}

/** 128 random bits as hex: crypto.randomUUID() exists only on HTTPS and localhost. */
function newClientMsgId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

async function sendMessage() {
  const text = $("message-text").value;
  const conversationId = state.view.id;
  if (!text.trim()) return;
  const pending = state.pendingSend;
  if (!pending || pending.conversationId !== conversationId || pending.text !== text) {
    state.pendingSend = { conversationId, text, clientMsgId: newClientMsgId() };
  }
  const message = await api.send(conversationId, text, state.pendingSend.clientMsgId);
  state.pendingSend = null;
  await receiveMessage(message);
  $("message-text").focus();
}

function sendOnEnter(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
}

function openClickedConversation(event) {
  const link = event.target.closest("[data-conversation-id]");
  if (link) openConversation(Number(link.dataset.conversationId));
}

function backToList() {
  const openId = state.view?.id;
  closeConversation();
  focusConversationLink(openId);
}

function retryNow() {
  state.poller?.retryNow();
  state.waiting?.wake();
}

// ---- start ----

async function boot() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("log-out").addEventListener("click", logOut);
  $("retry-now").addEventListener("click", retryNow);
  $("conversations").addEventListener("click", openClickedConversation);
  $("back").addEventListener("click", backToList);
  $("load-older").addEventListener("click", loadOlder);
  $("message-text").addEventListener("keydown", sendOnEnter);
  handleForm("new-direct", "sidebar-error", startDirect);
  handleForm("new-group", "sidebar-error", createGroup);
  handleForm("add-members", "composer-error", addMembers);
  handleForm("composer", "composer-error", sendMessage);
  if (!session.token) return showSignIn();
  try {
    state.me = await whenReachable(api.me);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      $("loading").textContent = describe(error);
      return;
    }
    session.end();
    return showSignIn(SESSION_ENDED);
  }
  await enterChat();
}

boot();
