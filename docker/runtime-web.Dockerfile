# `adp worker --runtime web`: web tasks in Debian's Chromium, driven by Playwright.
# libatomic1: the Node.js driver that ships inside the playwright wheel links it.
ARG ADP_IMAGE=adp-python:local
FROM ${ADP_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium fonts-dejavu-core fonts-wqy-zenhei libatomic1 >/dev/null \
 && rm -rf /var/lib/apt/lists/*
ENV ADP_CHROMIUM_PATH=/usr/bin/chromium ADP_METRICS_HOST=0.0.0.0 METRICS_PORT=8001
EXPOSE 8001
CMD ["adp", "worker", "--runtime", "web"]
