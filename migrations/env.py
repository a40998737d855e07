"""Alembic environment: the URL from the app's settings, the metadata from its models."""

from logging.config import fileConfig

from alembic import context

from api.config import load_config
from api.db import Base, make_engine
from api.models import import_all_models

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

import_all_models()
target_metadata = Base.metadata


def run_migrations() -> None:
    url = config.attributes.get("database_url") or load_config()["DATABASE_URL"]
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=url.startswith("sqlite"),  # SQLite alters tables by copying
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
