"""CLI subcommands: one module each with ``add_arguments(parser)`` and ``run(args) -> int``.

Heavy imports (torch, pandas, ...) happen inside ``run``, so ``robustvit --help`` is instant.
"""

from __future__ import annotations

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("robustvit.commands.eval", "evaluate one model on one or more suites"),
    "run": ("robustvit.commands.run", "run a TOML suite file (models x suites)"),
    "results": ("robustvit.commands.results", "show stored records with a ViT-vs-CNN summary"),
    "list": ("robustvit.commands.list", "list registered models, datasets, suites, corruptions, ..."),
    "zoo": ("robustvit.commands.zoo", "train or describe the embedded zoo models"),
    "report": ("robustvit.commands.report", "write the ViT-vs-CNN HTML and Markdown report"),
    "leaderboard": ("robustvit.commands.leaderboard", "rank models on stored metrics (md, csv, html, json)"),
    "gate": ("robustvit.commands.gate", "check stored metrics against a policy (JUnit XML, exit 0/1/2)"),
    "store": ("robustvit.commands.store", "show a results store's tables or copy one store into another"),
}
