# The lanedesk image: one image for every process (migrate, web, worker, beat).
# Build: docker build -t lanedesk .   Run: see docker-compose.yml and docs/operators.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the package with the pinned versions, then drop the source tree: the `lanedesk`
# command runs the installed copy (README.md is needed as the package's readme).
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY engine ./engine
COPY workflows ./workflows
COPY tasks ./tasks
COPY web ./web
RUN pip install -c constraints.txt . && rm -rf /src

# The bundled diagrams are data, not part of the installed package: the compose `migrate`
# service deploys them from here (lanedesk deploy /app/bpmn/ticket_lifecycle.bpmn).
WORKDIR /app
COPY bpmn ./bpmn

# Run unprivileged. LANEDESK_DATA_DIR only matters when no database URL is configured.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin lanedesk \
    && mkdir -p /app/var && chown lanedesk /app/var
USER lanedesk
ENV LANEDESK_DATA_DIR=/app/var

EXPOSE 8000
CMD ["lanedesk", "--help"]
