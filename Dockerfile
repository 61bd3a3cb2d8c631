# One image for every streamrank process (worker, trainer, topic set-up).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY features features
COPY models models
COPY consumer consumer
COPY sim sim
RUN pip install --no-cache-dir . && useradd --create-home streamrank
USER streamrank
ENTRYPOINT ["streamrank"]
