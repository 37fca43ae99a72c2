"""gunicorn's settings for JSON logs (``gunicorn --config python:gateway.json_logs``, which ``serverless-model
gateway`` adds with ``SM_LOG_FORMAT=json``): its error and access lines, the app's, and warnings, as JSON lines on
stderr."""

from workers.logs import capture_strays, handler_config, settings_of

logconfig_dict = handler_config("gateway", settings_of()[1])
capture_strays()  # in gunicorn's master, before it forks the workers
