# -*- test-case-name: tests.test_config -*-
"""
attrs configuration classes, each built from parsed twistd Options by a named
constructor (C{ReceiverConfig.fromOptions}, C{SenderConfig.fromOptions}).
"""

from __future__ import annotations

from attrs import field, frozen  # noqa: F401

__all__: list[str] = []
