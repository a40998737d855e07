"""The web client and the API docs, served by the app itself (no build step).

views.py              GET / (the chat page), GET /docs (Swagger UI)
index.html            the page: sign-in, conversations, the chat pane
static/parley.css     one stylesheet, desktop and phone widths
static/client.js      the API: requests, the session in localStorage, the inbox poll loop
static/view.js        what the page shows, drawn with textContent only, never as HTML
static/app.js         what the page does: sign-in, forms, conversations, inbox entries
"""
