# kubelogexporter: the standard library only, so the image is the stock Python
# base plus one file. Build context: the repository root (see .dockerignore).
#     docker build -t kubelogexporter:0.1.0 .
FROM python:3.13-alpine

LABEL org.opencontainers.image.title="kubelogexporter" \
      org.opencontainers.image.description="Export Kubernetes pod logs to files from inside the cluster" \
      org.opencontainers.image.licenses="MIT"

# No bytecode writes: the CronJob runs with a read-only root filesystem.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Readable by the non-root user whatever the checkout umask was (BuildKit).
COPY --chmod=0444 kubelogexporter.py /app/kubelogexporter.py

# Same fixed non-root UID/GID as the manifests' securityContext (fsGroup makes
# the PVC writable for it). No passwd entry is needed.
USER 65532:65532
WORKDIR /data

ENTRYPOINT ["python3", "/app/kubelogexporter.py"]
CMD ["--help"]
