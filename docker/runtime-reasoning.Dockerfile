# `adp worker --runtime reasoning`: tasks that use the browser and the Python sandbox together,
# so this is the web runtime's image (Chromium) plus bubblewrap (and the code runtime's
# security_opt in docker-compose.yml).
ARG ADP_TAG=local
FROM adp-runtime-web:${ADP_TAG}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap python3 >/dev/null \
 && rm -rf /var/lib/apt/lists/*
CMD ["adp", "worker", "--runtime", "reasoning"]
