from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from api.accounts.schemas import UserSchema
from api.conversations.models import DIRECT, GROUP
from api.presence.schemas import PresenceSchema
from api.validation import ID_MAX, StrictInteger, check_storable_text

MEMBER_ID = StrictInteger(validate=validate.Range(min=1, max=ID_MAX))


class NewConversationSchema(Schema):
    kind = fields.String(required=True, validate=validate.OneOf([DIRECT, GROUP]))
    title = fields.String(validate=[validate.Length(min=1, max=128), check_storable_text])
    # Bounded here only against absurd bodies; the group size limit is checked
    # against the configured value when the group is written.
    member_ids = fields.List(MEMBER_ID, required=True, validate=validate.Length(max=10_000))

    @validates_schema
    def check_kind(self, data: dict, **_kwargs) -> None:
        if data["kind"] == DIRECT:
            if len(set(data["member_ids"])) != 1:
                raise ValidationError(
                    "A direct conversation names exactly one other user.", "member_ids"
                )
            if "title" in data:
                raise ValidationError("Direct conversations have no title.", "title")
        elif "title" not in data:
            raise ValidationError("A group needs a title.", "title")


class NewMembersSchema(Schema):
    member_ids = fields.List(MEMBER_ID, required=True, validate=validate.Length(min=1, max=10_000))


class ConversationSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    title = fields.String(allow_none=True)
    created_by = fields.Integer()
    created_at = fields.DateTime()
    last_seq = fields.Integer()
    members = fields.List(fields.Nested(UserSchema))


class MemberSchema(UserSchema):
    presence = fields.Nested(PresenceSchema)


class ConversationDetailSchema(ConversationSchema):
    """One conversation, its members with their presence."""

    members = fields.List(fields.Nested(MemberSchema))


new_conversation_schema = NewConversationSchema()
conversation_detail_schema = ConversationDetailSchema()
new_members_schema = NewMembersSchema()
conversation_schema = ConversationSchema()
conversations_schema = ConversationSchema(many=True)
