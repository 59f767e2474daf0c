# One image for the five Ledgerline processes; docker-compose.yml picks the subcommand.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY ledgerline ledgerline
COPY events events
COPY common common
COPY command command
COPY processor processor
COPY projector projector
COPY query query
COPY compliance compliance
COPY migrations migrations
RUN pip install --no-cache-dir . && useradd --system --uid 10001 ledgerline
USER ledgerline
ENTRYPOINT ["ledgerline"]
