# trustgap worker / CLI image: `docker build -t trustgap .`, then `docker run trustgap worker`.
FROM python:3.11-slim

# No compiler needed: every dependency ships manylinux wheels.
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY schemas ./schemas
RUN pip install . && useradd --system --uid 10001 trustgap
USER trustgap

# /metrics and /health; bind on all interfaces inside the container so Prometheus can scrape it.
ENV TRUSTGAP_WEB_HOST=0.0.0.0 TRUSTGAP_WEB_PORT=6066
EXPOSE 6066
ENTRYPOINT ["trustgap"]
CMD ["worker"]
