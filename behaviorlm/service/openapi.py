"""Print the service's OpenAPI schema as YAML (``make openapi`` writes ``openapi.yaml``).

The committed ``openapi.yaml`` must equal this output (a test checks it); the schema does not
depend on settings, so defaults are used.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml


def schema() -> dict[str, Any]:
    from behaviorlm.service.app import create_app
    from behaviorlm.service.settings import ServiceSettings

    return create_app(ServiceSettings.model_construct()).openapi()


def render() -> str:
    return yaml.safe_dump(schema(), sort_keys=False, allow_unicode=True, width=100)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
