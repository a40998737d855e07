from marshmallow import Schema, fields, validate, validates

from api.context import this_app
from api.messages.schemas import MessageSchema
from api.validation import ID_MAX, StrictInteger, check_limit

TIMEOUT_MAX_S = 3600  # larger asks are bad input; anything above the cap is lowered to it


class PollQuerySchema(Schema):
    after = fields.Integer(validate=validate.Range(min=0, max=ID_MAX))
    timeout = fields.Float(load_default=0.0, validate=validate.Range(min=0, max=TIMEOUT_MAX_S))
    limit = fields.Integer()

    @validates("limit")
    def check_limit(self, value: int, data_key: str) -> None:
        check_limit(value, this_app().config["INBOX_LIMIT_MAX"])


class AckSchema(Schema):
    seq = StrictInteger(required=True, validate=validate.Range(min=0, max=ID_MAX))


class EntrySchema(Schema):
    seq = fields.Integer()
    type = fields.String()
    conversation_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime()
    message = fields.Nested(MessageSchema, allow_none=True)
    # member_joined / member_left: who joined or left, and who did it.
    user_ids = fields.List(fields.Integer())
    actor_id = fields.Integer()
    # presence: whose, and their state as they let others see it.
    user_id = fields.Integer()
    online = fields.Boolean()
    last_seen = fields.String(allow_none=True)  # ISO 8601, as stored with the entry


class BatchSchema(Schema):
    entries = fields.List(fields.Nested(EntrySchema))
    cursor = fields.Integer()
    has_more = fields.Boolean()


poll_query_schema = PollQuerySchema()
ack_schema = AckSchema()
batch_schema = BatchSchema()
