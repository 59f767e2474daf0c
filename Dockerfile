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
# The keys' folders (docker-compose.yml mounts volumes there): a new volume takes this owner
# and mode, so only the processes' user can read the keys.
RUN pip install --no-cache-dir . && useradd --system --uid 10001 ledgerline \
    && install -d -o ledgerline -g ledgerline -m 0700 /var/lib/ledgerline/chain \
       /var/lib/ledgerline/anchors /var/lib/ledgerline/keyring
USER ledgerline
ENTRYPOINT ["ledgerline"]
