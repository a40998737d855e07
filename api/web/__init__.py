"""The web client and the API docs, served by the app itself (no build step).

    views.py              GET / (the chat page), GET /docs (Swagger UI)
    static/index.html     the page: sign-in, conversations, the chat pane
    static/parley.css     one stylesheet, desktop and phone widths
    static/client.js      the API: requests, the session in localStorage, the inbox poll loop
    static/app.js         the page: renders state with textContent only, never as HTML
"""
