"""Any text a client can send is kept exactly, or refused with nothing written.

Hypothesis draws texts from all of Unicode: lone surrogates, NUL, astral
characters, combining marks, characters that Unicode normalization would change,
and lengths around the 100,000-code-point limit. A text is stored and comes back
unchanged from the send, the history and the recipient's inbox exactly when the
contract allows it (1 to 100,000 code points, no NUL, valid Unicode); otherwise
the send is a 422 naming ``text`` and nothing is written.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.config import DEFAULTS
from tests.factories import poll

MAX_CHARS = DEFAULTS["MESSAGE_MAX_CHARS"]

# Characters that a careless pipeline would change: decomposed and precomposed
# forms, compatibility forms, a BOM, bidi controls, line separators that break
# JavaScript, noncharacters, the last code point, and halves of a surrogate pair.
AWKWARD = [
    "e\u0301", "\u00e9", "\u212b", "\ufb01", "\u1100\u1161", "\ufeff", "\u202e", "\u2028",
    "\u2029", "\ufffe", "\uffff", "\U0010ffff", "\U0001f468\u200d\U0001f469", "\ud83d", "\ude00",
]  # fmt: skip

any_character = st.characters()  # every code point, surrogates and NUL included
awkward_piece = st.one_of(any_character, st.sampled_from(AWKWARD))
awkward_text = st.lists(awkward_piece).map("".join)


@st.composite
def near_the_limit(draw) -> str:
    """A text of about 100,000 code points, built by repeating a short drawn piece
    (drawing that many characters one by one would be slow)."""
    piece = "".join(draw(st.lists(awkward_piece, min_size=1, max_size=8)))
    length = draw(st.integers(MAX_CHARS - 3, MAX_CHARS + 3))
    return (piece * (length // len(piece) + 1))[:length]


message_texts = st.one_of(st.text(any_character), awkward_text, near_the_limit())


def carried(text: str) -> str:
    """The text a JSON body with ``text`` denotes: an escaped surrogate pair
    (``\\ud83d\\ude00``) is one astral character to any JSON parser."""
    return json.loads(json.dumps(text))


def allowed(text: str) -> bool:
    try:
        text.encode("utf-8")  # lone surrogates are not Unicode text
    except UnicodeEncodeError:
        return False
    return 1 <= len(text) <= MAX_CHARS and "\x00" not in text


def send_escaped(client, sender, conversation_id: int, text: str):
    """Send with every non-ASCII character escaped, the only way a lone surrogate travels."""
    return client.post(
        f"/v1/conversations/{conversation_id}/messages",
        data=json.dumps({"text": text}),
        headers={**sender.auth, "Content-Type": "application/json"},
    )


def newest_in_history(client, reader, conversation_id: int) -> dict | None:
    page = client.get(
        f"/v1/conversations/{conversation_id}/messages",
        query_string={"limit": 1},
        headers=reader.auth,
    ).get_json()
    return page["messages"][-1] if page["messages"] else None


# The chat of the `pair` fixture is reused by every example (a function-scoped
# fixture): that is safe because each example asserts only on what it sent, reading
# the newest message and the inbox entries past the cursor it noted first.
@given(text=message_texts)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_text_is_kept_exactly_or_refused_with_nothing_written(client, pair, text):
    ann, ben, cid = pair
    cursor = poll(client, ben)["cursor"]
    newest_before = newest_in_history(client, ann, cid)

    response = send_escaped(client, ann, cid, text)

    news = poll(client, ben, after=cursor)["entries"]
    if allowed(carried(text)):
        assert response.status_code == 201, response.get_data(as_text=True)[:300]
        message = response.get_json()
        assert message["text"] == carried(text)
        assert newest_in_history(client, ann, cid) == message
        assert [entry["message"] for entry in news] == [message]
    else:
        assert response.status_code == 422, response.get_data(as_text=True)[:300]
        assert "text" in response.get_json()["error"]["details"]
        assert newest_in_history(client, ann, cid) == newest_before
        assert news == []
