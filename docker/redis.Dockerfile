# Redis for the task streams, from Debian's package (so it builds without an image registry).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* && install -d -o redis -g redis /data
USER redis
WORKDIR /data
EXPOSE 6379
# The password comes from REDIS_PASSWORD at start; there is no default.
CMD ["sh", "-c", ": \"${REDIS_PASSWORD:?set REDIS_PASSWORD}\"; exec redis-server --bind 0.0.0.0 --protected-mode no --appendonly yes --appendfsync everysec --dir /data --requirepass \"$REDIS_PASSWORD\""]
