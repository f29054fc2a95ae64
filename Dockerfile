# One image for the whole backend: chat-edge, chat-messaging and chat-presence
# in /usr/local/bin, and the demo page that the edge serves at / (compose.yaml
# picks the process with `command:`). Debian 12 (bookworm) throughout, the
# distribution the project is built and tested on.
#
#   docker build -t chat-backend .
#   docker run --rm chat-backend chat-edge     # etc.; see compose.yaml for the configuration

# ---- build: the C services, with Debian's -dev packages and the one Makefile
FROM debian:12.8-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev make pkg-config protobuf-c-compiler \
      libwebsockets-dev libnats-dev libprotobuf-c-dev libjansson-dev libjwt-dev libpq-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY proto/ proto/
COPY lib/ lib/
COPY services/ services/
RUN make -j"$(nproc)" build/bin/chat-edge build/bin/chat-messaging build/bin/chat-presence

# ---- web: the demo page's npm packages, exactly as locked (socket.io-client's browser bundle)
FROM node:22.12.0-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# ---- runtime: the shared libraries only, a non-root user. Its uid and gid are
# both 10001, fixed, so that a secret file given to that group (chgrp 10001,
# mode 0640; deploy/secrets/README.md) is readable by the services.
FROM debian:12.8-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libwebsockets17 libnats3.4 libprotobuf-c1 libjansson4 libjwt0 libpq5 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 chat \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin chat
COPY --from=build /src/build/bin/chat-edge /src/build/bin/chat-messaging /src/build/bin/chat-presence /usr/local/bin/
COPY web/index.html web/app.js web/style.css /usr/local/share/chat/web/
COPY --from=web /web/node_modules /usr/local/share/chat/web/node_modules
ENV EDGE_STATIC_DIR=/usr/local/share/chat/web
USER chat
# 3000: the edge (Socket.IO, /healthz, the demo page); 9100: HEALTH_PORT of
# messaging and presence as compose.yaml sets it.
EXPOSE 3000 9100
CMD ["chat-edge"]
