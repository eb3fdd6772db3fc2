"""mmfuse: fuse pretrained biological foundation models (DNA, RNA, protein, …) for prediction tasks.

The package is organised by component kind: :mod:`mmfuse.backbones` (sequence encoders),
:mod:`mmfuse.adapters` (fusion), :mod:`mmfuse.training` (LightningModules, heads, metrics) and
:mod:`mmfuse.data` (data modules). :mod:`mmfuse.registry` names them for YAML configs and plugins;
the ``mmfuse`` command is :mod:`mmfuse.cli`. Submodules are imported on demand so that importing
``mmfuse`` stays cheap.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
