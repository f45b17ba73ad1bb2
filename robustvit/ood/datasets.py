"""The embedded OOD image sets, registered as datasets (factories ``fn(split, **kw) -> Source``).

Made offline for the digits zoo (32x32 RGB in [0, 1], label -1, only a ``test`` split):
near-OOD ``ood_letters`` (:mod:`robustvit.ood.letters`); far-OOD ``ood_faces``,
``ood_textures``, ``ood_photos`` and the noise sanity set ``ood_noise``
(:mod:`robustvit.ood.embedded`).
"""

from __future__ import annotations

BUILTINS: dict[str, str] = {
    "ood_letters": "robustvit.ood.letters:ood_letters",
    "ood_faces": "robustvit.ood.embedded:ood_faces",
    "ood_textures": "robustvit.ood.embedded:ood_textures",
    "ood_photos": "robustvit.ood.embedded:ood_photos",
    "ood_noise": "robustvit.ood.embedded:ood_noise",
}
