"""The GPU image (Dockerfile) builds from the same pins as `make install` (issue 11).

No Docker daemon runs on this machine or in CI, so the image itself is not built here: these tests
check that what it would install agrees with requirements*.txt.
"""

from __future__ import annotations

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parent.parent


def _pins(name: str) -> dict[str, str]:
  pins = {}
  for line in (REPO / name).read_text().splitlines():
    match = re.match(r'^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;#]+)', line.strip())
    if match:
      pins[match.group(1).lower()] = match.group(3)
  return pins


def test_the_image_installs_the_pinned_working_set_through_make_install():
  dockerfile = (REPO / 'Dockerfile').read_text()
  assert re.search(r'^COPY requirements\.txt requirements-tff\.txt Makefile', dockerfile, re.M)
  assert 'make install PYTHON=python3.11' in dockerfile
  assert 'tensorflow-federated' in _pins('requirements-tff.txt')


def test_the_image_adds_cuda_to_the_same_tensorflow_version_as_requirements():
  dockerfile = (REPO / 'Dockerfile').read_text()
  cuda_pins = re.findall(r'tensorflow\[and-cuda\]==([0-9.]+)', dockerfile)
  assert cuda_pins == [_pins('requirements.txt')['tensorflow']]
  # TensorFlow 2.14 is built against CUDA 11.8 and cuDNN 8 (tensorflow.org/install/source#gpu)
  assert re.search(r'^FROM nvidia/cuda:11\.8\.[0-9]+-cudnn8-runtime', dockerfile, re.M)


def test_the_image_fetches_the_data_at_build_time_and_keeps_the_hosts_out():
  dockerfile = (REPO / 'Dockerfile').read_text()
  assert re.search(r'^RUN make data$', dockerfile, re.M)
  assert dockerfile.strip().splitlines()[-1] == 'CMD ["make", "run"]'
  ignored = (REPO / '.dockerignore').read_text().split()
  assert {'.venv', 'data', 'results'} <= set(ignored)
