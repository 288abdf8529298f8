"""Hook specifications: the one extension surface of catrs-plugin.

A plugin is a module with functions marked ``@hookimpl`` and named after the hooks below,
listed under the ``catrs`` entry-point group of its package::

    [project.entry-points.catrs]
    my_method = "my_package.catrs_plugin"

The built-in methods, models, datasets and attacks register exactly this way. What a method does
per epoch besides its loss (which examples it trains on, and how often) is part of the
:class:`~catrs_plugin.methods.base.Method` it registers: its ``schedule``, specified by
:class:`~catrs_plugin.methods.base.ScheduleHook`. A function marked
``@hookimpl`` whose name is none of the hooks below (a misspelling) makes the plugin fail to load
(pluggy's ``check_pending``), with a warning that names the plugin, its entry point and the hook
it probably meant; so does registering a name that another plugin already registered.
"""

from __future__ import annotations

import pluggy

from catrs_plugin.methods.base import Method
from catrs_plugin.plugins.specs import AttackSpec, DatasetSpec, ModelSpec

PROJECT = "catrs"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def catrs_register_methods() -> list[Method]:
    """Return the training methods this plugin provides."""


@hookspec
def catrs_register_models() -> list[ModelSpec]:
    """Return the architectures this plugin provides."""


@hookspec
def catrs_register_datasets() -> list[DatasetSpec]:
    """Return the datasets this plugin provides."""


@hookspec
def catrs_register_attacks() -> list[AttackSpec]:
    """Return the evasion attacks this plugin provides (for ``catrs compare --attack-eps``)."""
