"""tff_rqfed.environment: the record of where a run ran."""

from __future__ import annotations

import importlib.metadata
import subprocess

import numpy as np
import pytest

from tff_rqfed import environment

CPUINFO = """processor\t: 0
model name\t: Example CPU 9000
flags\t\t: fpu sse4_2 avx avx2 fma avx512f
processor\t: 1
model name\t: Example CPU 9000
flags\t\t: fpu sse4_2 avx avx2 fma avx512f
"""


def test_array_digest_tells_one_ulp_apart_and_equal_arrays_alike():
  values = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
  assert environment.array_digest(values) == environment.array_digest(values.copy())
  assert environment.array_digest(values) == environment.array_digest(np.asfortranarray(values))
  moved = values.copy()
  moved[2, 1] = np.nextafter(moved[2, 1], np.float32(np.inf))
  assert environment.array_digest(moved) != environment.array_digest(values)


def test_array_digest_includes_dtype_and_shape():
  values = np.arange(6, dtype=np.float32)
  assert environment.array_digest(values) != environment.array_digest(values.reshape(2, 3))
  assert environment.array_digest(values) != environment.array_digest(values.view(np.int32))


def test_cpu_reads_the_model_and_the_kernel_selecting_features():
  described = environment.cpu(CPUINFO)
  assert described['model'] == 'Example CPU 9000'
  assert described['features'] == ['sse4_2', 'avx', 'avx2', 'fma', 'avx512f']


def test_cpu_without_cpuinfo_still_names_a_processor():
  described = environment.cpu('')
  assert described['model'] and described['features'] == []


def test_describe_records_versions_and_input_digests():
  text = np.ones((4, 2), np.float32)
  described = environment.describe(inputs={'text_embeddings': text})
  assert described['packages']['numpy'] == importlib.metadata.version('numpy')
  assert described['packages']['tensorflow-federated'] == '0.87.0'
  assert described['input_sha256'] == {'text_embeddings': environment.array_digest(text)}
  assert environment.describe()['input_sha256'] == {}


def test_git_commit_marks_changed_tracked_files_and_is_none_outside_git(tmp_path):
  assert environment.git_commit(tmp_path) is None
  git = lambda *args: subprocess.run(['git', '-C', str(tmp_path), *args], check=True, capture_output=True)
  git('init', '-q')
  (tmp_path / 'a.txt').write_text('one')
  git('add', 'a.txt')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'one')
  head = subprocess.run(['git', '-C', str(tmp_path), 'rev-parse', 'HEAD'], check=True,
                        capture_output=True, text=True).stdout.strip()
  assert environment.git_commit(tmp_path) == head
  (tmp_path / 'untracked.txt').write_text('not part of the checkout')
  assert environment.git_commit(tmp_path) == head
  (tmp_path / 'a.txt').write_text('two')
  assert environment.git_commit(tmp_path) == head + '+changes'
