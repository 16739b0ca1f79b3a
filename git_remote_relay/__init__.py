"""git-remote-relay: git remote helper and remote-to-remote relay that stream packs.

Packs flow between native ``git pack-objects`` / ``git index-pack`` and the remote service as
bytes; Python never decodes or buffers a whole pack.
"""

__version__ = "0.1.0"
