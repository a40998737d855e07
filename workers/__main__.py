"""Run a background worker: ``python -m workers inbox-pruner [--once]``."""

import argparse
import logging

from api import create_app
from workers.inbox_pruner import InboxPruner

WORKERS = {worker.name: worker for worker in (InboxPruner,)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("name", choices=sorted(WORKERS))
    parser.add_argument("--once", action="store_true", help="run one step and exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    worker = WORKERS[args.name](create_app())
    if args.once:
        with worker.app.app_context():
            print(f"{worker.name}: handled {worker.step()}")
    else:
        worker.run_forever()


if __name__ == "__main__":
    main()
