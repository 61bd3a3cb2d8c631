# One image for every streamrank process (worker, trainer, topic set-up).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY features features
COPY models models
COPY consumer consumer
COPY sim sim
# With the optional librdkafka transport: STREAMRANK_TRANSPORT=confluent switches a worker to it.
RUN pip install --no-cache-dir '.[confluent]' && useradd --create-home streamrank
USER streamrank
ENTRYPOINT ["streamrank"]
