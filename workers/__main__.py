"""Run a background worker: ``python -m workers inbox-pruner [--once]``."""

import argparse
import logging

from api import create_app
from workers.inbox_pruner import InboxPruner
from workers.presence_sweeper import PresenceSweeper

WORKERS = {worker.name: worker for worker in (InboxPruner, PresenceSweeper)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("name", choices=sorted(WORKERS))
    parser.add_argument("--once", action="store_true", help="run one step and exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app()
    if WORKERS[args.name].needs_redis and not app.config["REDIS_URL"]:
        parser.exit(
            2,
            f"{args.name} works on the state shared in Redis; without REDIS_URL the "
            "web process runs it itself.\n",
        )
    worker = WORKERS[args.name](app)
    if args.once:
        with worker.app.app_context():
            print(f"{worker.name}: handled {worker.step()}")
    else:
        worker.run_as_process()


if __name__ == "__main__":
    main()
