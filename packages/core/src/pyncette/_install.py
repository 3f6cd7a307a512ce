"""The command that installs an optional part of Pyncette (a backend, ``prometheus``), right for the installed version.

A released version names the extra of the same version on the package index. A development or
local build (``2.0.0.dev0``, ``2.0.0+local``) is not on the index: there, ``pip install "pyncette[redis]"``
would resolve to another (1.x) release and replace this one, so the hint is the checkout's install
script instead.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

#: The install script of a Pyncette checkout, relative to its root.
CHECKOUT_SCRIPT = "tools/install.py"


def installed_version() -> str | None:
    """The installed version of the ``pyncette`` distribution (``None`` when run from a bare source tree)."""
    try:
        return version("pyncette")
    except PackageNotFoundError:
        return None


def is_release(release: str | None) -> bool:
    """Whether ``release`` can be installed from the package index (not a development or local build)."""
    return release is not None and "dev" not in release and "+" not in release


def install_command(extra: str, release: str | None = None) -> str:
    """The command that installs ``extra`` next to the running Pyncette (``release`` defaults to the
    installed version): the pinned extra for a release, the checkout's install script otherwise."""
    release = release if release is not None else installed_version()
    if is_release(release):
        return f'pip install "pyncette[{extra}]=={release}"'
    return f"python {CHECKOUT_SCRIPT} {extra}"


def install_hint(extra: str, release: str | None = None) -> str:
    """``install it with: ...``, saying where to run the command when it is the checkout's script."""
    release = release if release is not None else installed_version()
    command = install_command(extra, release)
    if is_release(release):
        return f"install it with: {command}"
    built = f"development build {release}" if release is not None else "an uninstalled source tree"
    return f"install it from the Pyncette checkout with: {command} (this is {built}, which is not on the package index)"


__all__ = ["CHECKOUT_SCRIPT", "install_command", "install_hint", "installed_version", "is_release"]
