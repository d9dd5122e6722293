"""A real iii SDK worker process for the server tests.

``python projector.py URL FUNCTION_ID SCOPE DELAY``: registers FUNCTION_ID and a ``state``
trigger on SCOPE, prints ``ready``, then prints each event's ``new_value`` as one JSON line
(after sleeping DELAY seconds in the handler), until killed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import warnings
from typing import Any

from iii import InitOptions, register_worker


def main() -> None:
    url, function_id, scope, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    worker = register_worker(url, InitOptions(worker_name="projector", otel={"enabled": False}))
    lock = threading.Lock()

    def project(event: dict[str, Any]) -> None:
        time.sleep(delay)
        with lock:
            print(json.dumps(event["new_value"]), flush=True)

    worker.register_function(function_id, project)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        worker.register_trigger(
            {"type": "state", "function_id": function_id, "config": {"scope": scope}}
        )
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
