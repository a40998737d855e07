"""One place that imports every model, for Alembic and the tests."""


def import_all_models() -> None:
    import api.accounts.models
    import api.conversations.models
    import api.inbox.models
    import api.messages.models  # noqa: F401
