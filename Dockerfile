# The lanedesk image: one image for every process (migrate, web, worker, beat).
# Build: docker build -t lanedesk .   Run: see docker-compose.yml and docs/operators.md.
# The workspace's front-end packages (htmx, bpmn-js, ...) from npm, by the lock file, and the
# studio's editor bundle built from web/studio by esbuild (a devDependency, pruned after use).
FROM node:20-slim AS assets
WORKDIR /assets
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/studio ./studio
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

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
# Served under /static/vendor/ (web/assets.py): npm's files from node_modules, the studio's
# bundle (studio.js, studio.css) from dist beside it.
COPY --from=assets /assets/node_modules ./node_modules
COPY --from=assets /assets/dist ./dist
ENV LANEDESK_ASSETS_DIR=/app/node_modules

# Run unprivileged. LANEDESK_DATA_DIR only matters when no database URL is configured.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin lanedesk \
    && mkdir -p /app/var && chown lanedesk /app/var
USER lanedesk
ENV LANEDESK_DATA_DIR=/app/var

EXPOSE 8000
CMD ["lanedesk", "--help"]
