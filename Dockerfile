# GPU image for tff-rqfed. TFF computations run on the CPU in TFF's worker subprocess (the pip worker
# has no CUDA); the server-side RQ-kmeans runs in the Python process and uses the GPU when visible.
FROM nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common make \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt requirements-tff.txt Makefile ./
RUN make install PYTHON=python3.11 \
    && .venv/bin/python -m pip install --quiet "tensorflow[and-cuda]==2.14.1"
COPY . .
# ML-100k is fetched at build time from the recbole wheel on PyPI (checksums verified), so the
# container runs without network; it is never committed (.dockerignore keeps the host's data out).
RUN make data
# The ML-100k job: MostPop, FedMF and RQFedRec, then the table (docker run --gpus all IMAGE).
CMD ["make", "run"]
