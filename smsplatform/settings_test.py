"""Test settings: the production settings with a fast password hasher."""

import os

# Tests run outside debug, like production: give them a key of their own (child processes the
# tests start inherit it) so the settings' refusal of the public default key does not trigger.
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-" + "t" * 40)

from smsplatform.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tasks enqueued by services run inline in tests; the real-worker tests use send_task.
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
