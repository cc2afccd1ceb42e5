# Postgres for the Dagster instance, from Debian's package.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
 && rm -rf /var/lib/apt/lists/* && install -d -o postgres -g postgres /var/lib/postgresql/data /run/postgresql
COPY docker/postgres/entrypoint.sh /usr/local/bin/adp-postgres
RUN chmod 0755 /usr/local/bin/adp-postgres
ENV PGDATA=/var/lib/postgresql/data
EXPOSE 5432
CMD ["adp-postgres"]
