from marshmallow import Schema, ValidationError, fields, validates

from api.context import this_app
from api.validation import IdList


class PresenceSchema(Schema):
    online = fields.Boolean()
    last_seen = fields.DateTime(allow_none=True)


class UserPresenceSchema(Schema):
    user_id = fields.Integer()
    online = fields.Boolean()
    last_seen = fields.DateTime(allow_none=True)


class PresenceQuerySchema(Schema):
    user_ids = IdList(required=True)

    @validates("user_ids")
    def check_count(self, value: list[int], data_key: str) -> None:
        limit = this_app().config["PRESENCE_QUERY_MAX"]
        if len(value) > limit:
            raise ValidationError(f"At most {limit} ids.")


class PresenceListSchema(Schema):
    presence = fields.List(fields.Nested(UserPresenceSchema))


presence_query_schema = PresenceQuerySchema()
presence_list_schema = PresenceListSchema()
