# The tutorial in a container: JupyterLab on the notebooks by default, `make test` on request.
#   docker build -t mtlib .
#   docker run --rm -p 8888:8888 mtlib        # open the URL with the token that it prints
#   docker run --rm mtlib make test
FROM python:3.11-slim AS build

# Where pip finds torch: wheels put in ./wheels first (see wheels/README.md), then this extra index
# (CPU builds by default; https://download.pytorch.org/whl/cu128 for CUDA; empty for PyPI alone).
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt ./
COPY wheels/ /tmp/wheels/
RUN python -m venv .venv \
    && .venv/bin/pip install --find-links /tmp/wheels -r requirements.txt

COPY . .
# The wheels served the install above; the final image takes the project without them.
RUN rm -f wheels/*.whl \
    && .venv/bin/pip install --no-deps --no-build-isolation -e . \
    && touch .venv/.installed

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY --from=build /app /app

EXPOSE 8888
CMD [".venv/bin/jupyter", "lab", "notebooks", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--allow-root"]
