# The platform image: gateway, worker, autoscaler and Flower (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md models.toml /app/
COPY gateway /app/gateway
COPY workers /app/workers
COPY model /app/model
RUN pip install --no-cache-dir /app
ENV PYTHONUNBUFFERED=1 SM_MODELS_FILE=/app/models.toml
CMD ["serverless-model", "gateway", "--host", "0.0.0.0"]
