"""Test settings: the production settings with a fast password hasher."""

import os
from pathlib import Path

# A pytest-xdist worker gets a var/ of its own (click spool, journals, broker folders), so that
# parallel workers never share a file; the serial pass and single runs keep var/.
if os.environ.get("PYTEST_XDIST_WORKER") and "SMS_VAR_DIR" not in os.environ:
    os.environ["SMS_VAR_DIR"] = str(
        Path(__file__).resolve().parent.parent / "var" / "test-workers" / os.environ["PYTEST_XDIST_WORKER"]
    )

# Tests run outside debug, like production: give them a key of their own (child processes the
# tests start inherit it) so the settings' refusal of the public default key does not trigger.
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-" + "t" * 40)

from smsplatform.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tasks enqueued by services run inline in tests; the real-worker tests use send_task.
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
