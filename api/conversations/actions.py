"""Opening chats, creating groups and changing who belongs to them.

Membership changes lock the conversation row first and the members' user rows
(in id order, inside ``do_append_entries``) second, the same order a send
uses, so the size limit holds under concurrent adds and nothing deadlocks.
"""

import hashlib
import json

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.accounts.actions import check_users_exist
from api.accounts.models import User
from api.context import this_app
from api.conversations.models import DIRECT, GROUP, Conversation, Membership, direct_key
from api.errors import ApiError
from api.inbox.actions import do_append_entries, notify_inbox
from api.inbox.models import MEMBER_JOINED, MEMBER_LEFT

conversations_table = Conversation.__table__
memberships_table = Membership.__table__
users_table = User.__table__


def _not_found(conversation_id: int) -> ApiError:
    # The same answer whether it does not exist or the caller is not a member,
    # so ids of other people's conversations leak nothing.
    return ApiError(404, "conversation_not_found", f"No conversation {conversation_id} of yours.")


# Built once: building a statement costs about what its round trip does.
_MEMBER_IDS = (
    select(memberships_table.c.user_id)
    .where(memberships_table.c.conversation_id == bindparam("conversation"))
    .order_by(memberships_table.c.user_id)
)
# A send's first statements (see ``api.messages.actions``). Bumping the counter
# locks the conversation row until commit (FOR NO KEY UPDATE, as
# ``access_conversation(lock=True)`` would): one sender at a time per
# conversation, which is the conversation order. Membership changes take that
# lock first too, so the members locked under it (in id order, as
# ``lock_users`` does) stay the members until commit.
SEND_LOCKS = (
    update(conversations_table)
    .where(conversations_table.c.id == bindparam("conversation"))
    .values(last_seq=conversations_table.c.last_seq + 1)
    .returning(conversations_table.c.last_seq),
    select(users_table.c.id)
    .join(memberships_table, memberships_table.c.user_id == users_table.c.id)
    .where(memberships_table.c.conversation_id == bindparam("conversation"))
    .order_by(users_table.c.id)
    .with_for_update(of=users_table, key_share=True),
)


def member_ids(session: Session, conversation_id: int) -> list[int]:
    return list(session.scalars(_MEMBER_IDS, {"conversation": conversation_id}))


def access_conversation(
    session: Session, conversation_id: int, user_id: int, lock: bool = False
) -> Conversation:
    """The conversation if ``user_id`` belongs to it (locked for update if asked); else 404."""
    query = select(Conversation).where(Conversation.id == conversation_id)
    if lock:
        query = query.with_for_update(key_share=True)  # see do_append_entries
    conversation = session.scalars(query).first()
    if conversation is None or not session.get(Membership, (conversation_id, user_id)):
        raise _not_found(conversation_id)
    return conversation


def access_group(session: Session, conversation_id: int, user_id: int) -> Conversation:
    conversation = access_conversation(session, conversation_id, user_id, lock=True)
    if conversation.kind != GROUP:
        raise ApiError(409, "not_a_group", "Members of a direct conversation cannot change.")
    return conversation


def check_group_size(size: int) -> None:
    limit = this_app().config["GROUP_SIZE_LIMIT"]
    if size > limit:
        raise ApiError(409, "group_full", f"A group has at most {limit} members.", {"limit": limit})


def do_open_direct(session: Session, user_id: int, other_id: int) -> tuple[Conversation, bool]:
    """The pair's one direct conversation, created if new; returns it and whether it is new."""
    if other_id == user_id:
        raise ApiError(
            422,
            "invalid_input",
            "A direct conversation is with someone else.",
            {"member_ids": ["Name one other user."]},
        )
    check_users_exist(session, {other_id})
    key = direct_key(user_id, other_id)
    existing = session.scalars(select(Conversation).where(Conversation.direct_key == key)).first()
    if existing is not None:
        return existing, False
    conversation = Conversation(kind=DIRECT, direct_key=key, created_by=user_id, last_seq=0)
    try:
        with session.begin_nested():
            session.add(conversation)
            session.flush()
            session.execute(
                insert(Membership),
                [
                    {"conversation_id": conversation.id, "user_id": uid}
                    for uid in (user_id, other_id)
                ],
            )
    except IntegrityError:
        # Someone opened the same chat at the same moment: theirs is the one.
        session.rollback()
        return session.scalars(
            select(Conversation).where(Conversation.direct_key == key)
        ).one(), False
    session.commit()
    return conversation, True


def do_create_group(
    session: Session, user_id: int, title: str, others: set[int], key: str | None = None
) -> tuple[Conversation, bool]:
    """Create a group; returns it and whether it is new. With an idempotency
    ``key``, the group this user created with it before, if any (409 if that
    creation asked for another title or other members)."""
    members = others | {user_id}
    digest = _creation_digest(title, members) if key is not None else None
    if key is not None and (earlier := _created_with(session, user_id, key, digest)):
        return earlier, False
    check_group_size(len(members))
    check_users_exist(session, members)
    conversation = Conversation(
        kind=GROUP,
        title=title,
        created_by=user_id,
        last_seq=0,
        creation_key=key,
        creation_digest=digest,
    )
    try:
        with session.begin_nested():
            session.add(conversation)
            session.flush()
    except IntegrityError:
        # The same creation, retried while the first was still running: the first's.
        session.rollback()
        earlier = _created_with(session, user_id, key, digest) if key is not None else None
        if earlier is None:
            raise
        return earlier, False
    session.execute(
        insert(Membership),
        [{"conversation_id": conversation.id, "user_id": uid} for uid in sorted(members)],
    )
    heads = do_append_entries(
        session,
        members,
        MEMBER_JOINED,
        conversation.id,
        payload={"user_ids": sorted(members), "actor_id": user_id},
    )
    session.commit()
    notify_inbox(heads)
    return conversation, True


def _creation_digest(title: str, members: set[int]) -> str:
    """What a group's creation asked for, in 64 hex digits."""
    asked = json.dumps([title, sorted(members)], ensure_ascii=False)
    return hashlib.sha256(asked.encode()).hexdigest()


def _created_with(session: Session, user_id: int, key: str, digest: str) -> Conversation | None:
    """The group this user created with ``key``, if any; 409 if it asked for
    another, and 404 if the user has left it since (it is not theirs to see)."""
    earlier = session.scalars(
        select(Conversation).where(
            Conversation.created_by == user_id, Conversation.creation_key == key
        )
    ).first()
    if earlier is None:
        return None
    if earlier.creation_digest != digest:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "This Idempotency-Key already created a group with another title or members.",
            {"conversation_id": earlier.id},
        )
    return access_conversation(session, earlier.id, user_id)


def do_add_members(
    session: Session, conversation_id: int, actor_id: int, user_ids: set[int]
) -> Conversation:
    conversation = access_group(session, conversation_id, actor_id)
    current = set(member_ids(session, conversation_id))
    added = user_ids - current
    if not added:
        return conversation
    check_group_size(len(current) + len(added))
    check_users_exist(session, added)
    session.execute(
        insert(Membership),
        [{"conversation_id": conversation_id, "user_id": uid} for uid in sorted(added)],
    )
    heads = do_append_entries(
        session,
        current | added,
        MEMBER_JOINED,
        conversation_id,
        payload={"user_ids": sorted(added), "actor_id": actor_id},
    )
    session.commit()
    notify_inbox(heads)
    return conversation


def do_remove_member(session: Session, conversation_id: int, actor_id: int, user_id: int) -> None:
    """Leave a group, or (its creator only) remove someone; they are told too."""
    conversation = access_group(session, conversation_id, actor_id)
    if user_id != actor_id and conversation.created_by != actor_id:
        raise ApiError(403, "forbidden", "Only the group's creator removes other members.")
    current = member_ids(session, conversation_id)
    if user_id not in current:
        raise ApiError(404, "member_not_found", f"User {user_id} is not in this group.")
    session.execute(
        delete(Membership).where(
            Membership.conversation_id == conversation_id, Membership.user_id == user_id
        )
    )
    heads = do_append_entries(
        session,
        current,
        MEMBER_LEFT,
        conversation_id,
        payload={"user_ids": [user_id], "actor_id": actor_id},
    )
    session.commit()
    notify_inbox(heads)


def list_conversations(session: Session, user_id: int) -> list[Conversation]:
    return list(
        session.scalars(
            select(Conversation)
            .join(Membership, Membership.conversation_id == Conversation.id)
            .where(Membership.user_id == user_id)
            .order_by(Conversation.id.desc())
        )
    )


def members_by_conversation(session: Session, conversation_ids: list[int]) -> dict[int, list[User]]:
    """Each conversation's members, in one query."""
    found: dict[int, list[User]] = {cid: [] for cid in conversation_ids}
    rows = session.execute(
        select(Membership.conversation_id, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.conversation_id.in_(conversation_ids))
        .order_by(Membership.conversation_id, User.id)
    )
    for conversation_id, user in rows:
        found[conversation_id].append(user)
    return found
