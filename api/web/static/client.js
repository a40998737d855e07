// Parley's HTTP API as the web client uses it: requests, the session kept in
// localStorage, and the inbox poll loop. Nothing here touches the page.

const TOKEN_KEY = "parley.token";
const CURSOR_KEY = "parley.cursor";
const LONG_POLL_S = 25; // the server's cap: it would lower anything longer
const REQUEST_TIMEOUT_S = 15; // a plain request; a long poll adds its wait to this
const BACKOFF_FIRST_S = 1;
const BACKOFF_MAX_S = 60;
const HISTORY_PAGE = 50;
const PRESENCE_QUERY_MAX = 100; // user ids per GET /v1/presence
const INBOX_LOCK = "parley-inbox";

/** The server answered with an error: `{error: {code, message, details}}`. */
export class ApiError extends Error {
  constructor(status, code, message, details, retryAfterS) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfterS = retryAfterS;
  }
}

/** No answer at all: the network is down, the server is gone, or it took too long. */
export class Unreachable extends Error {}

/** Whether trying the same request later may succeed. */
export function isTransient(error) {
  return error instanceof Unreachable || (error instanceof ApiError && [429, 502, 503, 504].includes(error.status));
}

/** The token and inbox cursor of this browser's device; they survive a reload. */
export const session = {
  get token() {
    return localStorage.getItem(TOKEN_KEY);
  },
  get cursor() {
    return localStorage.getItem(CURSOR_KEY);
  },
  start(token) {
    localStorage.setItem(TOKEN_KEY, token);
    localStorage.removeItem(CURSOR_KEY);
  },
  saveCursor(cursor) {
    localStorage.setItem(CURSOR_KEY, String(cursor));
  },
  forgetCursor() {
    localStorage.removeItem(CURSOR_KEY);
  },
  end() {
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(CURSOR_KEY);
  },
};

async function request(method, path, { body, query = {}, signal, waitS = 0 } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json" };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const timeout = AbortSignal.timeout((REQUEST_TIMEOUT_S + waitS) * 1000);
  let response;
  let data;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
    data = response.status === 204 ? null : await response.json().catch(() => null);
  } catch (error) {
    if (signal?.aborted) throw error; // the caller gave up (a log-out): not a failure
    throw new Unreachable(error.message);
  }
  if (response.ok) return data;
  const error = data?.error ?? { code: "http_error", message: `The server answered ${response.status}.` };
  const retryAfterS = Number(response.headers.get("Retry-After")) || 0;
  throw new ApiError(response.status, error.code, error.message, error.details, retryAfterS);
}

/** One call per operation of openapi.yaml that the page uses. */
export const api = {
  signUp: (username, password, displayName) =>
    request("POST", "/v1/users", {
      body: { username, password, ...(displayName ? { display_name: displayName } : {}) },
    }),
  logIn: (username, password) =>
    request("POST", "/v1/sessions", { body: { username, password, device_name: "web browser" } }),
  logOut: () => request("DELETE", "/v1/sessions/current"),
  me: () => request("GET", "/v1/users/me"),
  findUser: async (username) => (await request("GET", "/v1/users", { query: { username } })).users[0],
  conversations: async () => (await request("GET", "/v1/conversations")).conversations,
  conversation: (id) => request("GET", `/v1/conversations/${id}`),
  openDirect: (userId) =>
    request("POST", "/v1/conversations", { body: { kind: "direct", member_ids: [userId] } }),
  createGroup: (title, memberIds) =>
    request("POST", "/v1/conversations", { body: { kind: "group", title, member_ids: memberIds } }),
  addMembers: (id, memberIds) =>
    request("POST", `/v1/conversations/${id}/members`, { body: { member_ids: memberIds } }),
  history: (id, before) =>
    request("GET", `/v1/conversations/${id}/messages`, { query: { before, limit: HISTORY_PAGE } }),
  send: (id, text, clientMsgId) =>
    request("POST", `/v1/conversations/${id}/messages`, { body: { text, client_msg_id: clientMsgId } }),
  presence: async (userIds) => {
    const answers = [];
    for (let start = 0; start < userIds.length; start += PRESENCE_QUERY_MAX) {
      const user_ids = userIds.slice(start, start + PRESENCE_QUERY_MAX).join(",");
      answers.push(...(await request("GET", "/v1/presence", { query: { user_ids } })).presence);
    }
    return answers;
  },
};

/** Seconds to wait after `failures` failures in a row: doubling from 1 s to 60 s,
 * each wait a random point in its upper half so that clients cut off together
 * do not come back together; never less than the server's Retry-After. */
export function backoffS(failures, retryAfterS = 0) {
  const ceiling = Math.min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 1));
  return Math.max(retryAfterS, ceiling / 2 + (Math.random() * ceiling) / 2);
}

/** Resolves after `seconds`, or early when `wake()` is called or `signal` aborts. */
export function pause(seconds, signal = new AbortController().signal) {
  let wake;
  const done = new Promise((resolve) => {
    const timer = setTimeout(resolve, seconds * 1000);
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
    signal.addEventListener("abort", wake, { once: true });
  });
  return { done, wake };
}

/**
 * The poll loop of README's "Writing a client". Long-polls the inbox and hands
 * each batch to `onEntries` (awaited) before storing its cursor, which the next
 * poll confirms with `after=`; re-polls at once after every answer and backs
 * off with jitter after failures.
 *
 * Handlers: onEntries(entries, {backlog}), onConnection({state, retryInS?}) with state
 * "live", "unreachable" or "other-tab", onPruned() before resuming past a pruned
 * inbox, onUnauthorized() when the token no longer works.
 */
export class InboxPoller {
  constructor(handlers) {
    this.handlers = handlers;
    this.controller = new AbortController();
    this.pending = null;
  }

  /** Polls until stop(). Only one tab of the browser polls at a time: tabs share the
   * token, and two polls of one device would end each other's over and over. */
  async run() {
    const { signal } = this.controller;
    if (!navigator.locks) return this.#loop();
    const ran = await navigator.locks.request(INBOX_LOCK, { ifAvailable: true }, async (lock) => {
      if (lock) await this.#loop();
      return Boolean(lock);
    });
    if (ran || signal.aborted) return;
    this.handlers.onConnection({ state: "other-tab" });
    try {
      await navigator.locks.request(INBOX_LOCK, { signal }, () => this.#loop());
    } catch (error) {
      if (!signal.aborted) throw error;
    }
  }

  stop() {
    this.controller.abort();
  }

  /** Ends the current back-off wait early. */
  retryNow() {
    this.pending?.wake();
  }

  async #loop() {
    const { signal } = this.controller;
    let failures = 0;
    // A new device starts at the oldest entry its inbox keeps: short polls read that
    // backlog, which is old news, before long polls wait for what is new.
    let backlog = session.cursor === null;
    // After a start or a failure a short poll comes first: it tells at once that the
    // server answers again, where a long poll could keep the page guessing for 25 s.
    let live = false;
    while (!signal.aborted) {
      try {
        const waitS = live && !backlog ? LONG_POLL_S : 0;
        const batch = await request("GET", "/v1/inbox", {
          query: { after: session.cursor, timeout: waitS },
          signal,
          waitS,
        });
        failures = 0;
        if (!live) this.handlers.onConnection({ state: "live" });
        live = true;
        await this.handlers.onEntries(batch.entries, { backlog });
        if (signal.aborted) return;
        session.saveCursor(batch.cursor);
        backlog &&= batch.has_more;
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ApiError && error.status === 401) return this.handlers.onUnauthorized();
        if (await this.#recovered(error)) continue;
        live = false;
        failures += 1;
        const retryInS = backoffS(failures, error.retryAfterS);
        this.handlers.onConnection({ state: "unreachable", retryInS, error });
        this.pending = pause(retryInS, signal);
        await this.pending.done;
      }
    }
  }

  /** Whether an error needed no wait: a pruned inbox (reloaded), or a cursor the server lost. */
  async #recovered(error) {
    if (error instanceof ApiError && error.code === "cursor_pruned") {
      try {
        await this.handlers.onPruned();
      } catch {
        return false; // the reload failed too: wait, then poll (and be told) again
      }
      session.saveCursor(error.details.oldest_cursor);
      return true;
    }
    if (error instanceof ApiError && error.status === 422 && error.details?.after) {
      // A cursor from before the server's data was reset: resume from the stored one.
      session.forgetCursor();
      return true;
    }
    return false;
  }
}
