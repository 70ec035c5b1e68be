FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY resolvers resolvers
COPY adapters adapters
COPY legacy legacy
COPY config config
COPY deploy deploy
RUN pip install --no-cache-dir .
