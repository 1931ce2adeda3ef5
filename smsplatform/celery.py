import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsplatform.settings")

app = Celery("smsplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The request id, actor and channel of whoever queued a task are its log context.
from smsplatform.operations.logs import celery_signals_connect  # noqa: E402

celery_signals_connect()
