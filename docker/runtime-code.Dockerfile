# `adp worker --runtime code`: code tasks in bubblewrap sandboxes. The container itself needs
# user namespaces and a fresh /proc for bwrap (see docker-compose.yml, security_opt).
ARG ADP_IMAGE=adp-python:local
FROM ${ADP_IMAGE}
# python3: the interpreter inside the sandbox (the sandbox sees only /usr).
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap python3 >/dev/null \
 && rm -rf /var/lib/apt/lists/*
ENV ADP_METRICS_HOST=0.0.0.0 METRICS_PORT=8001
EXPOSE 8001
CMD ["adp", "worker", "--runtime", "code"]
