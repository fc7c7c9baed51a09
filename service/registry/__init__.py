"""Model versions: which bentos exist, how they are built, and whether they may serve.

Read side: the versions declared in `bentos/<family>/versions.yaml` (`versions`, no BentoML
import) and the bentos in the local store (`bentos`). Write side: training and `bentoml build`
(`build`), content-addressed training data (`snapshots`) from the synthetic population
(`population`). Checks: quality gates (`gate_checks` pure, `gates` serving a bento) and model
cards (`cards`); `bentoml serve` as a process (`bento_process`). May import `flags`, `store` and
`config`/`errors`/`processes`/`files`; `serving` may import its read side.
"""
