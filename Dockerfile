# One image for every streamrank process (worker, trainer, topic set-up).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY features features
COPY models models
COPY consumer consumer
COPY sim sim
# With the optional librdkafka transport: STREAMRANK_TRANSPORT=confluent switches a worker to it.
# /models exists in the image, owned by streamrank: Docker copies a directory's ownership into a new
# named volume mounted on it; without it the `models` volume is root-owned and the trainer cannot
# write models (tests/test_compose.py checks every path the compose services mount).
RUN pip install --no-cache-dir '.[confluent]' \
 && useradd --create-home streamrank \
 && mkdir -p /models \
 && chown streamrank:streamrank /models
USER streamrank
ENTRYPOINT ["streamrank"]
