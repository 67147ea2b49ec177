"""Typed errors raised by the library; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class InspectorError(Exception):
    """Base class of every error the user can cause; its message is one line meant for an operator."""

    exit_code = 1


class ConfigError(InspectorError):
    """The configuration file is missing, malformed, has an unknown key or a value of the wrong type."""

    exit_code = 2


class ImageRejected(InspectorError):
    """An input file is not an image we can judge; `reason` is a short machine-readable code."""

    exit_code = 3

    def __init__(self, reason: str, detail: str, errno: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.errno = errno  # the OS error number behind an "unreadable" rejection, when there is one


class ProfileError(InspectorError):
    """A saved profile is missing, corrupt, truncated or incompatible with this version."""

    exit_code = 4


class NoActiveProfile(ProfileError):
    """No profile has been trained or activated yet."""


class DatasetError(InspectorError):
    """A folder given for training or evaluation lacks images or the expected layout."""

    exit_code = 5
