# The gateway image: the package, its CLI and nothing else (Redis and PostgreSQL run as
# their own services, see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY lua ./lua
COPY loadtests ./loadtests
RUN pip install --no-cache-dir -e . && pip install --no-cache-dir locust
ENV IOU_DATA_DIR=/data
EXPOSE 8080
CMD ["iou", "serve", "--host", "0.0.0.0", "--port", "8080"]
