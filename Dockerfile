# One image for every xmppd process: `xmppd edge|router|presence|storage|admin`
# and `xmppctl migrate`. Configuration comes only from XMPPD_* variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY services/ services/

# Generate the gRPC code from proto/ first so that it ships inside the
# installed package (the root filesystem is read-only at run time).
RUN pip install 'grpcio-tools>=1.60' \
 && python -m services.cluster.protogen \
 && pip install '.[cluster,ops,fast]' \
 && rm -rf /src \
 && groupadd --system --gid 10001 xmppd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/xmppd --create-home xmppd

WORKDIR /var/lib/xmppd
ENV XMPPD_DATA_DIR=/var/lib/xmppd \
    XMPPD_LOG_JSON=true \
    XMPPD_OPS_PORT=9100 \
    XMPPD_OPS_HOST=0.0.0.0

USER 10001:10001

# 5222 STARTTLS, 5223 direct TLS, 5280 WebSocket/BOSH/host-meta (plain HTTP:
# clients may log in over it only if XMPPD_HTTP_SECURE says so, for a
# TLS-terminating proxy in front), 50051-50054 gRPC (edge, router, presence,
# storage), 8080 admin REST API, 9100 /metrics /healthz /readyz
EXPOSE 5222 5223 5280 8080 9100 50051 50052 50053 50054

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('XMPPD_OPS_PORT', '9100'), timeout=2)"]

CMD ["xmppd"]
