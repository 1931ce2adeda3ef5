# The Celery app is loaded with Django so that @shared_task binds to it.
from smsplatform.celery import app as celery_app

# The platform's release (pyproject.toml's version; a test keeps them equal). MCP's
# initialize answers it as serverInfo.version.
__version__ = "0.1.0"

__all__ = ("__version__", "celery_app")
