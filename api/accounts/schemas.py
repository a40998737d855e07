from marshmallow import Schema, fields, validate

from api.validation import StrictBoolean, check_storable_text

USERNAME = validate.Regexp(
    r"^[A-Za-z0-9_.-]{3,32}\Z",  # not "$", which also matches before a final newline
    error="3 to 32 letters, digits, '_', '.' or '-'.",
)


class UserSchema(Schema):
    id = fields.Integer(dump_only=True)
    username = fields.String(required=True, validate=USERNAME)
    display_name = fields.String(validate=[validate.Length(min=1, max=64), check_storable_text])
    password = fields.String(
        required=True,
        load_only=True,
        validate=[validate.Length(min=8, max=256), check_storable_text],
    )
    created_at = fields.DateTime(dump_only=True)


LOOKUP_TEXT = [validate.Length(min=1, max=64), check_storable_text]


class MeSchema(UserSchema):
    """My own profile: the public one plus my settings."""

    show_presence = fields.Boolean()


class MeUpdateSchema(Schema):
    display_name = fields.String(validate=[validate.Length(min=1, max=64), check_storable_text])
    show_presence = StrictBoolean()


class LogInSchema(Schema):
    username = fields.String(required=True, validate=LOOKUP_TEXT)
    password = fields.String(
        required=True, validate=[validate.Length(min=1, max=256), check_storable_text]
    )
    device_name = fields.String(
        load_default="unnamed device",
        validate=[validate.Length(min=1, max=64), check_storable_text],
    )


class SessionSchema(Schema):
    token = fields.String()
    device_id = fields.Integer()
    user = fields.Nested(UserSchema)


class DeviceSchema(Schema):
    """One of my devices; ``current`` is the one asking."""

    device_id = fields.Integer()
    name = fields.String()
    created_at = fields.DateTime()
    current = fields.Boolean()


class UserLookupSchema(Schema):
    username = fields.String(required=True, validate=LOOKUP_TEXT)


user_schema = UserSchema()
me_schema = MeSchema()
me_update_schema = MeUpdateSchema()
users_schema = UserSchema(many=True)
log_in_schema = LogInSchema()
session_schema = SessionSchema()
user_lookup_schema = UserLookupSchema()
devices_schema = DeviceSchema(many=True)
