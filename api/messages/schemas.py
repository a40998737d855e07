from marshmallow import Schema, ValidationError, fields, validate, validates

from api.context import this_app
from api.validation import ID_MAX, IDEMPOTENCY_KEY, check_limit, check_storable_text


class MessageSchema(Schema):
    id = fields.Integer(dump_only=True)
    conversation_id = fields.Integer(dump_only=True)
    sender_id = fields.Integer(dump_only=True)
    seq = fields.Integer(dump_only=True)
    text = fields.String(required=True)
    client_msg_id = fields.String(allow_none=True, validate=IDEMPOTENCY_KEY)
    created_at = fields.DateTime(dump_only=True)

    @validates("text")
    def check_text(self, value: str, data_key: str) -> None:
        limit = this_app().config["MESSAGE_MAX_CHARS"]
        # len() counts code points: an emoji is one character.
        if not 1 <= len(value) <= limit:
            raise ValidationError(f"Text is 1 to {limit} characters.")
        check_storable_text(value)


class HistoryQuerySchema(Schema):
    before = fields.Integer(validate=validate.Range(min=1, max=ID_MAX))
    after = fields.Integer(validate=validate.Range(min=0, max=ID_MAX))
    limit = fields.Integer()

    @validates("limit")
    def check_limit(self, value: int, data_key: str) -> None:
        check_limit(value, this_app().config["HISTORY_LIMIT_MAX"])


class HistoryPageSchema(Schema):
    messages = fields.List(fields.Nested(MessageSchema))
    has_more = fields.Boolean()


message_schema = MessageSchema()
history_query_schema = HistoryQuerySchema()
history_page_schema = HistoryPageSchema()
